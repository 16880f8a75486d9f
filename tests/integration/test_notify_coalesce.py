"""A flapping alert against an exhausted budget: one Slack message and one page per window, not one per
firing; the next window's message counts the ones held back."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.test_pager import PageHook
from tests.support.daemon import WEBHOOK_TOKEN, command_service, running_daemon, write_config
from tests.support.http_stub import serve
from tests.support.slack_recorder import SlackRecorder


async def fire(url: str, payload: dict[str, Any], n: int) -> dict[str, Any]:
    body = copy.deepcopy(payload)
    body["alerts"][0]["fingerprint"] = f"flap{n:04d}"
    body["alerts"][0]["startsAt"] = f"2026-11-22T03:{n:02d}:00Z"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/v1/webhook/alertmanager",
            data=json.dumps(body),
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 202
        answer: dict[str, Any] = await r.json()
        return answer


async def test_budget_exhaustion_while_flapping_is_one_message_and_one_page_per_window(
    tmp_path: Path, slack_recorder: SlackRecorder, firing_payload: dict[str, Any], monkeypatch: Any
) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_recorder.webhook_url)
    with serve(PageHook, attempts=[], pages=[], down=False) as hook:
        svc = command_service([{"type": "command", "argv": ["/bin/true"]}], budget={"max": 0})
        svc["page_webhook"] = {"url": f"{hook.url}/page", "retries": 0}
        svc["escalate_mention"] = "<!subteam^S0ONCALL>"
        cfg = write_config(
            tmp_path,
            services={"rag": svc},
            notify_coalesce_window="1s",
            notify={"type": "slack", "webhook_url": "${SLACK_WEBHOOK_URL}"},
        )
        async with running_daemon(cfg) as d:
            for n in range(7):
                answer = await fire(d.url, firing_payload, n)
                assert answer["decisions"][0]["reason"] == "budget_exhausted"
            await d.core.notify.drain()
            await asyncio.wait_for(d.core.runner.pager.wait(), 30)
            first = [m.text or "" for m in slack_recorder.messages()]
            pages = list(hook.pages)
            await asyncio.sleep(1.1)  # the window is over: the next one is told, with the count
            await fire(d.url, firing_payload, 7)
            await d.core.notify.drain()
            await asyncio.wait_for(d.core.runner.pager.wait(), 30)
            after = [m.text or "" for m in slack_recorder.messages()]
    assert len(first) == 1 and "<!subteam^S0ONCALL>" in first[0] and "budget" in first[0]
    assert len(pages) == 1 and pages[0]["state"] == "budget_exhausted" and pages[0]["incident_id"] is None
    assert len(after) == 2 and "6 more suppression(s)" in after[1]
    assert len(hook.pages) == 2
