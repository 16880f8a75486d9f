"""An incident keeps one Slack thread, and its outcome edits that thread's root, even when its first
root was lost: Slack refused the root post, or the daemon died (kill -9) before the root was posted
and its reference journaled. Real Slack notifier against the Slack recorder on loopback; the crash
case runs the real daemon as a child process."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from rollbackd.notify import Message
from rollbackd.notify.queue import NotifyQueue
from rollbackd.notify.slack import SlackNotifier
from tests.support.daemon import DaemonProcess, command_service, write_config
from tests.support.slack_recorder import Recorded, SlackRecorder


def message(title: str, kind: str = "step") -> Message:
    return Message(kind=kind, title=title, service="rag", incident_id="inc1")  # type: ignore[arg-type]


def bot(slack: SlackRecorder) -> SlackNotifier:
    options = {"bot_token": slack.token, "channel": "C1", "base_url": slack.base_url, "max_retries": 0}
    return SlackNotifier(SlackNotifier.Options.model_validate(options))


def only_root(slack: SlackRecorder) -> Recorded:
    roots = [r for r in slack.roots() if r.ok]
    assert len(roots) == 1, [r.text for r in roots]
    return roots[0]


async def test_a_refused_root_is_posted_before_the_next_reply() -> None:
    async with SlackRecorder() as slack:
        saved: dict[str, dict[str, str]] = {}

        async def save(incident_id: str, ref: dict[str, str]) -> None:
            saved[incident_id] = ref

        queue = NotifyQueue({}, default=bot(slack), save_thread=save, backoff_max=0.05)
        slack.fail_next(1, status=200, error="fatal_error")  # not retried: the root is refused
        queue.opened(message("Rolling back rag", "opened"))
        queue.reply(message("restore done"))
        queue.update_root(message("resolved", "finished"))
        queue.start()
        await queue.drain(timeout=20)
        await queue.stop()
    root = only_root(slack)
    assert "Rolling back rag" in (root.text or "")
    assert saved == {"inc1": {"channel": "C1", "ts": root.ts}}
    replies = [r.text or "" for r in slack.thread(root.ts or "")]
    assert len(replies) == 2 and "restore done" in replies[0] and "resolved" in replies[1], replies
    (update,) = slack.updates(root.ts)
    assert "resolved" in (update.text or "")


async def test_a_resumed_note_starts_the_thread_only_when_none_is_known() -> None:
    async with SlackRecorder() as slack:
        threads = {"known": {"channel": "C1", "ts": "1700000000.000042"}}

        async def load(incident_id: str) -> dict[str, str] | None:
            return threads.get(incident_id)

        queue = NotifyQueue({}, default=bot(slack), load_thread=load)
        queue.start()
        known = Message(kind="step", title="resumed (known)", service="rag", incident_id="known")
        queue.reply(known, root=Message(kind="opened", title="root again", service="rag", incident_id="known"))
        await queue.drain(timeout=10)
        (note,) = slack.messages()
        assert note.thread_ts == "1700000000.000042" and "resumed (known)" in (note.text or "")

        queue.reply(message("resumed (lost)"), root=message("Rolling back rag", "opened"))
        queue.reply(message("swap done"))
        await queue.drain(timeout=10)
        await queue.stop()
    root = only_root(slack)
    assert "Rolling back rag" in (root.text or "")
    replies = [r.text or "" for r in slack.thread(root.ts or "")]
    assert len(replies) == 2 and "resumed (lost)" in replies[0] and "swap done" in replies[1], replies


async def test_a_root_that_landed_before_the_process_died_keeps_the_incident_in_its_thread() -> None:
    """The daemon died after Slack had the root but before it journaled the root's reference (or Slack's
    answer was lost on the way). After the restart the incident's thread is unknown to the journal, but
    Slack's history knows it: the resumed note, the steps and the outcome go there; no second root."""
    async with SlackRecorder() as slack:
        ended = NotifyQueue({}, default=bot(slack))  # the life that ended: its root landed, nothing journaled
        ended.start()
        ended.opened(message("Rolling back rag", "opened"))
        await ended.drain(timeout=10)
        await ended.stop()
        saved: dict[str, dict[str, str]] = {}

        async def save(incident_id: str, ref: dict[str, str]) -> None:
            saved[incident_id] = ref

        async def nothing_journaled(incident_id: str) -> None:
            return None

        queue = NotifyQueue({}, default=bot(slack), load_thread=nothing_journaled, save_thread=save)
        queue.start()
        queue.reply(message("resumed"), root=message("Rolling back rag", "opened"))
        queue.reply(message("swap done"))
        queue.update_root(message("resolved", "finished"))
        await queue.drain(timeout=20)
        await queue.stop()
    root = only_root(slack)
    assert saved == {"inc1": {"channel": "C1", "ts": root.ts}}
    replies = [r.text or "" for r in slack.thread(root.ts or "")]
    assert ["resumed" in replies[0], "swap done" in replies[1], "resolved" in replies[2]] == [True] * 3, replies
    (update,) = slack.updates(root.ts)
    assert "resolved" in (update.text or "")


async def test_webhook_mode_never_reposts_a_root() -> None:
    async with SlackRecorder() as slack:
        hook = SlackNotifier(SlackNotifier.Options.model_validate({"webhook_url": slack.webhook_url}))
        assert hook.threads is False and bot(slack).threads is True
        queue = NotifyQueue({}, default=hook)
        queue.start()
        queue.opened(message("Rolling back rag", "opened"))
        queue.reply(message("resumed"), root=message("Rolling back rag", "opened"))  # a webhook cannot thread
        queue.update_root(message("resolved", "finished"))
        await queue.drain(timeout=10)
        await queue.stop()
    texts = [r.text or "" for r in slack.messages()]
    assert sum("Rolling back rag" in t for t in texts) == 1 and any("resumed" in t for t in texts), texts


def wait_file(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def slow_incident_daemon(tmp_path: Path, slack: SlackRecorder, *, timeout: float) -> tuple[DaemonProcess, Path, Path]:
    """A daemon whose rollback waits in its second step until ``gate`` exists (``sleeping`` says it does)."""
    gate, sleeping = tmp_path / "gate", tmp_path / "sleeping"
    plan = [
        {"type": "command", "name": "first", "argv": ["/bin/true"]},
        {
            "type": "command",
            "name": "slow",
            "argv": ["/bin/sh", "-c", f"touch {sleeping}; while [ ! -f {gate} ]; do sleep 0.05; done"],
        },
    ]
    notify = {
        "type": "slack",
        "bot_token": "${SLACK_BOT_TOKEN}",
        "channel": "C0INCIDENT",
        "base_url": slack.base_url,
        "max_retries": 0,
        "timeout": timeout,
    }
    cfg = write_config(tmp_path, services={"rag": command_service(plan)}, notify=notify)
    return DaemonProcess(cfg), gate, sleeping


def restart_until_resolved(daemon: DaemonProcess, gate: Path, slack: SlackRecorder) -> dict[str, Any]:
    """Start the daemon again with its slow step let go; its one incident resolved and its outcome told."""
    gate.touch()
    daemon.start()
    (incident,) = daemon.api.call("GET", "/v1/incidents")[1]["incidents"]
    final = daemon.api.wait_incident(incident["id"], ("resolved", "failed"))
    assert final["state"] == "resolved", final
    slack.wait_for(lambda s: bool(s.updates()), timeout=20)
    return incident


def one_resumed_thread(slack: SlackRecorder, incident: dict[str, Any]) -> Recorded:
    """One root for the incident, "resumed" first in its thread, the slow step in it, the outcome on it."""
    root = only_root(slack)
    assert incident["id"] in json.dumps(root.blocks)
    thread = [r.text or "" for r in slack.thread(root.ts or "")]
    assert "restarted and resumes" in thread[0], thread
    assert any("slow" in t for t in thread[1:]), thread
    (update,) = slack.updates(root.ts)
    assert "resolved" in (update.text or "").lower(), update.text
    return root


def test_kill9_before_the_root_was_posted_still_gives_one_thread_with_the_outcome(
    tmp_path: Path, slack_recorder: SlackRecorder, firing_payload: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack_recorder.token)
    daemon, gate, sleeping = slow_incident_daemon(tmp_path, slack_recorder, timeout=1)
    try:
        slack_recorder.set_down(True)  # the root cannot be posted before this life of the daemon ends
        daemon.start()
        status, body = daemon.api.webhook(firing_payload)
        assert status == 202 and body["decisions"][0]["action"] == "rollback", body
        wait_file(sleeping)
        daemon.kill9()
        assert slack_recorder.messages() == []

        slack_recorder.set_down(False)
        incident = restart_until_resolved(daemon, gate, slack_recorder)
    finally:
        daemon.stop()
    root = one_resumed_thread(slack_recorder, incident)  # started by the restarted daemon
    assert "Rolling back rag" in (root.text or "")


def test_kill9_after_slack_had_the_root_but_before_it_was_journaled_keeps_that_root(
    tmp_path: Path, slack_recorder: SlackRecorder, firing_payload: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 while Slack holds the root's answer: the root is in the channel, its ts never reached the
    journal. The restarted daemon finds that root in the channel's history (its incident id is in the
    message metadata): the "resumed" note and the steps go into its thread, the outcome edits it, and
    there is no second root."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack_recorder.token)
    daemon, gate, sleeping = slow_incident_daemon(tmp_path, slack_recorder, timeout=30)
    try:
        slack_recorder.hold_next(60)  # delivered at once, answered long after this life of the daemon
        daemon.start()
        status, body = daemon.api.webhook(firing_payload)
        assert status == 202 and body["decisions"][0]["action"] == "rollback", body
        wait_file(sleeping)
        slack_recorder.wait_for(lambda s: len(s.roots()) == 1)
        daemon.kill9()
        incident = restart_until_resolved(daemon, gate, slack_recorder)
    finally:
        daemon.stop()
    one_resumed_thread(slack_recorder, incident)
    assert [r.method for r in slack_recorder.requests].count("conversations.history") >= 1
