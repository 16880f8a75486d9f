"""An incident reported in a Slack thread (bot token, through the loopback recorder): a root message,
a threaded reply per step start and end, and the root updated with the outcome. A Slack outage never
delays the rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.daemon import WEBHOOK_TOKEN, command_service, running_daemon, write_config
from tests.support.slack_recorder import SlackRecorder


def slack_config(recorder: SlackRecorder) -> dict[str, Any]:
    return {
        "type": "slack",
        "bot_token": "${SLACK_BOT_TOKEN}",
        "channel": "C0INCIDENT",
        "base_url": recorder.base_url,
        "max_retries": 1,
        "timeout": 2,
    }


async def fire(url: str, payload: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/v1/webhook/alertmanager",
            data=json.dumps(payload),
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 202


async def test_incident_thread(
    tmp_path: Path, slack_recorder: SlackRecorder, firing_payload: dict[str, Any], monkeypatch: Any
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack_recorder.token)
    plan = [
        {"type": "command", "name": "snapshot", "argv": ["/bin/true"]},
        {"type": "command", "name": "broken", "argv": ["/bin/sh", "-c", "echo disk full >&2; exit 3"]},
    ]
    svc = {**command_service(plan), "escalate_mention": "<!subteam^S0ONCALL>"}
    cfg = write_config(tmp_path, services={"rag": svc}, notify=slack_config(slack_recorder))
    async with running_daemon(cfg) as d:
        await fire(d.url, firing_payload)
        (incident,) = await d.core.store.list_incidents("rag", 5)
        assert await d.core.runner.wait(incident.id) is not None
        await d.core.notify.drain()
    (root,) = slack_recorder.roots()
    assert "RAGGateFailRateHigh" in root.text and root.channel == "C0INCIDENT"
    replies = [m.text for m in slack_recorder.thread(root.ts)]
    assert any("snapshot" in t and "done" in t for t in replies)
    assert any("broken failed" in t and "disk full" in t for t in replies)
    assert any("<!subteam^S0ONCALL>" in t and "failed" in t for t in replies)
    (update,) = slack_recorder.updates(root.ts)
    assert "failed" in update.text
    assert all(r.token == slack_recorder.token for r in slack_recorder.requests)


async def test_slack_down_never_delays_the_rollback(
    tmp_path: Path, slack_recorder: SlackRecorder, firing_payload: dict[str, Any], monkeypatch: Any
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack_recorder.token)
    slack_recorder.set_down(True)
    svc = command_service([{"type": "command", "name": "only", "argv": ["/bin/true"]}])
    cfg = write_config(tmp_path, services={"rag": svc}, notify=slack_config(slack_recorder))
    async with running_daemon(cfg) as d:
        await fire(d.url, firing_payload)
        (incident,) = await d.core.store.list_incidents("rag", 5)
        assert (await d.core.runner.wait(incident.id)).value == "resolved"
        await d.core.notify.drain(timeout=30)
        async with aiohttp.ClientSession() as http, http.get(d.url + "/metrics") as r:
            text = await r.text()
    assert 'rollbackd_notify_failures_total{notifier="slack"}' in text
    assert 'rollbackd_notify_failures_total{notifier="slack"} 0.0' not in text
