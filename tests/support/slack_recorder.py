"""A Slack stand-in on 127.0.0.1 for tests: enough of the Web API (chat.postMessage with message
metadata, chat.update, and the read-only auth.test, conversations.info and conversations.history) and
of incoming webhooks for slack-sdk; records every request; fails on demand. It runs in its own thread
with its own event loop, so sync and async tests use it alike.

    with SlackRecorder() as slack:                     # or: async with SlackRecorder() as slack
        options = {"bot_token": slack.token, "channel": "C1", "base_url": slack.base_url}
        ...                                            # webhook mode: {"webhook_url": slack.webhook_url}
        slack.wait_for(lambda s: len(s.roots()) == 1)  # async tests: await slack.wait_for_async(...)
        root = slack.roots()[0]; assert [r.text for r in slack.thread(root.ts)] == [...]

SlackRecorder(token=TOKEN, webhook_path=WEBHOOK_PATH, channels=None)
    .base_url            "http://127.0.0.1:PORT/api/" (AsyncWebClient's base_url)
    .webhook_url         "http://127.0.0.1:PORT" + webhook_path (AsyncWebhookClient's url)
    .token               the bot token accepted as ``Authorization: Bearer``; another gets invalid_auth
    .requests            every request, failed ones included: list[Recorded], in arrival order
    .messages(channel=None)   delivered posts (chat.postMessage and webhook), in order
    .roots()             delivered posts not in a thread;   .thread(ts): delivered replies under root ts
    .updates(ts=None)    delivered chat.update calls (of root ts)
    .wait_for(predicate, timeout=10) / await .wait_for_async(...)   predicate(recorder) -> bool;
                         raises TimeoutError when it stays false
    .fail_next(n=1, status=429, retry_after=1, error=None, landed=False)   the next n requests fail with
                         ``status``; 429 carries Retry-After (whole seconds, as Slack sends it); status=200
                         with error="channel_not_found" answers ok:false; ``landed``: a post is delivered
                         all the same (in the channel, in its history), only its answer is the failure
    .scopes              what read answers give as ``x-oauth-scopes`` (None: no such header)
    .history_scope       False: conversations.history answers missing_scope (a token without
                         channels:history); the history holds delivered top-level posts, newest first,
                         their ``metadata`` only with include_all_metadata, ``oldest`` exclusive, in
                         pages of ``limit`` with a ``next_cursor``
    .hold_next(seconds)  the next chat.postMessage is delivered at once, answered only after ``seconds``
    .set_down(True|False)   refuse connections (listening socket closed, open connections dropped)
    .channels            the channel ids conversations.info knows (None: any id; a "#name" never, as
                         in Slack, where conversations.info takes ids only)
    .reset()             forget requests and pending failures
Recorded: .method ("chat.postMessage" | "chat.update" | "webhook" | the unknown name), .status, .ok,
    .error, .token, .body (dict), .channel, .text, .blocks, .thread_ts, .ts (assigned or updated), .at,
    .answered (False: delivered, but the client got a failure instead of its answer)
Like Slack it rejects blocks over the limits (header 150, section text 3000, 10 fields of 2000, 50
blocks; counted in UTF-16 units) with invalid_blocks, and a post without text or blocks with no_text.
The pytest fixture ``slack_recorder`` yields a started recorder (import it, or list this module in
``pytest_plugins``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

TOKEN = "xoxb-recorder-0000-secret"
WEBHOOK_PATH = "/services/T000/B000/XXX"
_FAIL_CODES = {429: "ratelimited", 500: "internal_error", 503: "service_unavailable"}
_READ_METHODS = ("auth.test", "conversations.info", "conversations.history")


@dataclass(frozen=True)
class Recorded:
    method: str
    status: int
    ok: bool
    error: str | None
    token: str | None
    body: dict[str, Any]
    ts: str | None = None
    at: float = field(default_factory=time.monotonic)
    answered: bool = True

    @property
    def channel(self) -> str | None:
        return self.body.get("channel")

    @property
    def text(self) -> str | None:
        return self.body.get("text")

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return list(self.body.get("blocks") or [])

    @property
    def thread_ts(self) -> str | None:
        return self.body.get("thread_ts")


def _units(text: object) -> int:
    return len(str(text).encode("utf-16-le", errors="surrogatepass")) // 2


def _block_ok(block: dict[str, Any]) -> bool:
    kind = block.get("type")
    if kind == "header":
        return 0 < _units(block.get("text", {}).get("text", "")) <= 150
    if kind == "section":
        fields = block.get("fields") or []
        text = (block.get("text") or {}).get("text")
        return (
            (text is not None or bool(fields))
            and _units(text or "") <= 3000
            and len(fields) <= 10
            and all(_units(f.get("text", "")) <= 2000 for f in fields)
        )
    if kind == "context":
        elements = block.get("elements") or []
        return 0 < len(elements) <= 10 and all(_units(e.get("text", "")) <= 3000 for e in elements)
    return True


def _problem(body: dict[str, Any]) -> str | None:
    blocks = body.get("blocks")
    if not body.get("text") and not blocks:
        return "no_text"
    if blocks is not None and (
        not isinstance(blocks, list)
        or len(blocks) > 50
        or not all(isinstance(b, dict) and _block_ok(b) for b in blocks)
    ):
        return "invalid_blocks"
    return None


class SlackRecorder:
    def __init__(
        self, *, token: str = TOKEN, webhook_path: str = WEBHOOK_PATH, channels: set[str] | None = None
    ) -> None:
        self.token = token
        self.webhook_path = webhook_path
        self.channels = channels
        self._requests: list[Recorded] = []
        self._failures: list[tuple[int, float, str | None, bool]] = []
        self.history_scope = True
        self._holds: list[float] = []
        self.scopes: str | None = "chat:write,channels:history"  # the x-oauth-scopes header (None: none)
        self._cond = threading.Condition(threading.RLock())
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self.port = 0

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> SlackRecorder:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slack-recorder", daemon=True)
        self._thread.start()
        self._run(self._start())
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)  # answers still held go out now
            self._run(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = self._runner = self._site = None

    def __enter__(self) -> SlackRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> SlackRecorder:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.webhook_path}"

    # ---- what tests read ------------------------------------------------------------------------
    @property
    def requests(self) -> list[Recorded]:
        with self._cond:
            return list(self._requests)

    def messages(self, channel: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.ok and r.method in ("chat.postMessage", "webhook") and (channel is None or r.channel == channel)
        ]

    def roots(self) -> list[Recorded]:
        return [r for r in self.messages() if not r.thread_ts]

    def thread(self, ts: str) -> list[Recorded]:
        return [r for r in self.messages() if r.thread_ts == ts]

    def updates(self, ts: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if r.ok and r.method == "chat.update" and ts in (None, r.ts)]

    def wait_for(self, predicate: Callable[[SlackRecorder], bool], timeout: float = 10) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                raise TimeoutError(f"slack recorder: condition not met in {timeout}s; got {self.requests}")

    async def wait_for_async(self, predicate: Callable[[SlackRecorder], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"slack recorder: condition not met in {timeout}s; got {self.requests}")
            await asyncio.sleep(0.02)

    # ---- what tests program ---------------------------------------------------------------------
    def fail_next(
        self, n: int = 1, *, status: int = 429, retry_after: float = 1, error: str | None = None, landed: bool = False
    ) -> None:
        with self._cond:
            self._failures.extend([(status, retry_after, error, landed)] * n)

    def hold_next(self, seconds: float) -> None:
        """The next chat.postMessage is delivered at once (in the channel and its history) but answered
        only after ``seconds``: a client that dies meanwhile never learns its ts."""
        with self._cond:
            self._holds.append(seconds)

    def set_down(self, down: bool = True) -> None:
        self._run(self._go_down() if down else self._go_up())

    def reset(self) -> None:
        with self._cond:
            self._requests.clear()
            self._failures.clear()

    # ---- the server -----------------------------------------------------------------------------
    def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack-sdk sends conversations.info as a GET
        app.router.add_post("/services/{rest:.*}", self._webhook)
        self._runner = web.AppRunner(app, access_log=None)  # the webhook path is a secret: never log it
        await self._runner.setup()
        await self._go_up()

    async def _go_up(self) -> None:
        if self._site is not None or self._runner is None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def _go_down(self) -> None:
        if self._site is None or self._runner is None:
            return
        await self._site.stop()
        self._site = None
        for connection in self._runner.server.connections if self._runner.server else []:
            connection.force_close()

    def _record(
        self,
        method: str,
        status: int,
        error: str | None,
        token: str | None,
        body: dict[str, Any],
        ts: str | None = None,
        answered: bool = True,
    ) -> None:
        with self._cond:
            ok = error is None and status < 300
            self._requests.append(Recorded(method, status, ok, error, token, body, ts, answered=answered))
            self._cond.notify_all()

    def _take_failure(self) -> tuple[int, float, str | None, bool] | None:
        with self._cond:
            return self._failures.pop(0) if self._failures else None

    def _next_ts(self) -> str:
        """As Slack's: the epoch time of the post in microseconds, unique and increasing."""
        with self._cond:
            self._seq = max(self._seq + 1, int(time.time() * 1_000_000))
            return f"{self._seq // 1_000_000}.{self._seq % 1_000_000:06d}"

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await _body(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else body.get("token")
        with self._cond:
            hold = self._holds.pop(0) if self._holds and method == "chat.postMessage" else None
        failure = self._take_failure()
        if failure is not None and failure[3] and method == "chat.postMessage":  # landed: only the answer fails
            refused, _, ts = self._answer(method, body, token, None)
            self._record(method, 200, refused, token, body, ts, answered=refused is not None)
            status, _, error, _ = failure
            return web.json_response(
                {"ok": False, "error": error or _FAIL_CODES.get(status, "internal_error")}, status=status
            )
        error, status, ts = self._answer(method, body, token, failure)
        self._record(method, status, error, token, body, ts)
        headers = {"Retry-After": str(math.ceil(failure[1]))} if failure and status == 429 else None
        if error is not None:
            return web.json_response({"ok": False, "error": error}, status=status, headers=headers)
        if method in _READ_METHODS:  # Slack names the token's scopes on its answers
            scopes = {"x-oauth-scopes": self.scopes} if self.scopes is not None else None
            return web.json_response({"ok": True, **self._read(method, body)}, headers=scopes)
        if hold is not None:  # delivered (recorded above), answered only now, or as the recorder stops
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), hold)
        message = {k: body.get(k) for k in ("text", "blocks", "thread_ts") if k in body}
        return web.json_response(
            {"ok": True, "channel": body.get("channel"), "ts": ts, "message": {"type": "message", "ts": ts, **message}}
        )

    def _answer(
        self, method: str, body: dict[str, Any], token: str | None, failure: tuple[int, float, str | None, bool] | None
    ) -> tuple[str | None, int, str | None]:
        if failure is not None:
            status, _, error, _ = failure
            return error or _FAIL_CODES.get(status, "internal_error"), status, None
        if not token:
            return "not_authed", 200, None
        if token != self.token:
            return "invalid_auth", 200, None
        if method in _READ_METHODS:
            return self._read_problem(method, body), 200, None
        if method not in ("chat.postMessage", "chat.update"):
            return "unknown_method", 404, None
        if not body.get("channel"):
            return "channel_not_found", 200, None
        problem = _problem(body)
        if problem is not None:
            return problem, 200, None
        if method == "chat.update":
            ts = body.get("ts")
            known = any(r.ts == ts for r in self.messages(body.get("channel")))
            return (None, 200, ts) if known else ("message_not_found", 200, None)
        return None, 200, self._next_ts()

    def _read_problem(self, method: str, body: dict[str, Any]) -> str | None:
        if method == "auth.test":
            return None
        if method == "conversations.history" and not self.history_scope:
            return "missing_scope"
        channel = str(body.get("channel") or "")
        known = self.channels is None or channel in self.channels
        return None if channel and not channel.startswith("#") and known else "channel_not_found"

    def _read(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "url": "https://recorder.slack.test/",
                "team": "Recorder",
                "user": "rollbackd",
                "team_id": "T000",
                "user_id": "U0ROLLBACKD",
                "bot_id": "B0ROLLBACKD",
            }
        channel = str(body["channel"])
        if method == "conversations.history":  # pages as Slack's: newest first, a cursor to the next
            found = self._history(channel, body)
            start = int(str(body.get("cursor") or "0").removeprefix("page:") or 0)
            end = start + int(body.get("limit") or 100)
            more = end < len(found)
            page = {"messages": found[start:end], "has_more": more}
            return {**page, "response_metadata": {"next_cursor": f"page:{end}" if more else ""}}
        return {
            "channel": {"id": channel, "name": f"channel-{channel.lower()}", "is_member": True, "is_archived": False}
        }

    def _history(self, channel: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Delivered top-level posts of ``channel``, newest first, after ``oldest``."""
        oldest = float(query.get("oldest") or 0)
        metadata = str(query.get("include_all_metadata", "")).lower() in ("1", "true")
        found = []
        for posted in reversed(self.messages(channel)):
            if posted.method != "chat.postMessage" or posted.thread_ts or float(posted.ts or 0) <= oldest:
                continue
            message = {"type": "message", "ts": posted.ts, "text": posted.text, "bot_id": "B0ROLLBACKD"}
            if metadata and isinstance(posted.body.get("metadata"), dict):
                message["metadata"] = posted.body["metadata"]
            found.append(message)
        return found

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await _body(request)
        failure = self._take_failure()
        if failure is not None:
            status, retry_after, error, _ = failure
            error = error or ("rate_limited" if status == 429 else "internal_error")
            headers = {"Retry-After": str(math.ceil(retry_after))} if status == 429 else None
        elif request.path != self.webhook_path:
            status, error, headers = 404, "no_service", None
        else:
            error = _problem(body)
            status, headers = (400 if error else 200), None
        self._record("webhook", status, error, None, body, None)
        return web.Response(text=error or "ok", status=status, headers=headers)


async def _body(request: web.Request) -> dict[str, Any]:
    """JSON or form body (slack-sdk sends both), JSON-valued form fields decoded, query merged."""
    body: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        with contextlib.suppress(ValueError):
            data = await request.json()
            body.update(data if isinstance(data, dict) else {})
    else:
        for key, value in (await request.post()).items():
            body[key] = value if isinstance(value, str) else str(value)
        for key in ("blocks", "attachments", "metadata"):
            if isinstance(body.get(key), str):
                with contextlib.suppress(ValueError):
                    body[key] = json.loads(body[key])
    return body


@pytest.fixture
def slack_recorder() -> Iterator[SlackRecorder]:
    """A started SlackRecorder, stopped after the test."""
    with SlackRecorder() as recorder:
        yield recorder
