"""A loopback server speaking enough of the OpenAI API for the `ragas` scorer: chat completions (with
canned judgments, in the JSON form instructor's JSON mode asks for) and embeddings.

    async with OpenAIStub(mode="good") as stub:      # base_url: stub.base_url
        stub.mode = "bad"                             # good | bad | error | slow | garbage

Judgments are chosen by the JSON schema the request asks for: ragas' statement generator gets one
statement, its NLI step one verdict (1 good / 0 bad), answer relevancy a question (noncommittal 0 good /
1 bad), context recall one classification (attributed 1 / 0). Embeddings are the same unit vector for
every input (cosine 1). ``error`` answers HTTP 500, ``slow`` sleeps ``delay`` seconds, ``garbage`` answers
text that is not JSON. Every request body is kept in ``requests``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web


def _judgment(prompt: str, good: bool) -> dict[str, Any]:
    if '"attributed"' in prompt or "classifications" in prompt:
        return {
            "classifications": [
                {"statement": "The reference is covered.", "reason": "stub", "attributed": 1 if good else 0}
            ]
        }
    if "noncommittal" in prompt:
        return {"question": "What does the answer say?", "noncommittal": 0 if good else 1}
    if '"verdict"' in prompt or "verdict" in prompt:
        return {"statements": [{"statement": "The answer's claim.", "reason": "stub", "verdict": 1 if good else 0}]}
    return {"statements": ["The answer's claim."]}


class OpenAIStub:
    def __init__(self, *, mode: str = "good", delay: float = 5.0) -> None:
        self.mode = mode
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.mode == "error":
            return web.json_response({"error": {"message": "stub failure", "type": "server_error"}}, status=500)
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        prompt = json.dumps(body.get("messages", []))
        content = "this is not JSON" if self.mode == "garbage" else json.dumps(_judgment(prompt, self.mode == "good"))
        return web.json_response(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "stub"),
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.mode == "error":
            return web.json_response({"error": {"message": "stub failure"}}, status=500)
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        return web.json_response(
            {
                "object": "list",
                "model": body.get("model", "stub"),
                "data": [{"object": "embedding", "index": i, "embedding": [0.6, 0.8, 0.0]} for i in range(len(items))],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )

    async def __aenter__(self) -> OpenAIStub:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
