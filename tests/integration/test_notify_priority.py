"""An alert storm's messages never take the room of an incident's own: a channel sends an incident's
messages first, storm messages have their own bound, and a full queue drops (and counts) storm messages,
never the incident's. Real Slack notifier against the Slack recorder on loopback."""

from __future__ import annotations

from collections import Counter

from rollbackd.notify import Message
from rollbackd.notify.queue import NotifyQueue
from rollbackd.notify.slack import SlackNotifier
from tests.support.slack_recorder import SlackRecorder


def storm(n: int) -> Message:
    return Message(kind="decision", title=f"storm {n}", service="rag", severity="warning")


def incident(title: str) -> Message:
    return Message(kind="incident", title=title, service="rag", severity="warning", incident_id="inc1")


async def test_a_storm_never_crowds_out_the_incident_and_only_storm_messages_are_dropped() -> None:
    async with SlackRecorder() as slack:
        notifier = SlackNotifier(
            SlackNotifier.Options.model_validate(
                {"bot_token": slack.token, "channel": "C1", "base_url": slack.base_url}
            )
        )
        dropped: Counter[str] = Counter()
        queue = NotifyQueue({}, default=notifier, maxsize=10, on_drop=lambda p: dropped.update([p]))
        for n in range(40):  # the storm arrives first and fills its share of the queue
            queue.post(storm(n))
        queue.opened(incident("opened"))
        for step in ("cut_traffic", "restore", "swap"):
            queue.reply(incident(step))
        queue.update_root(incident("resolved"))
        assert dropped == {"other": 30} and queue.dropped == 30
        queue.start()
        await queue.drain(timeout=30)
        await queue.stop()
    texts = [r.text for r in slack.messages()]
    incident_sent = [i for i, t in enumerate(texts) if "storm" not in t]
    storm_sent = [i for i, t in enumerate(texts) if "storm" in t]
    assert len(storm_sent) == 10 and len(incident_sent) >= 5  # the outcome also lands in the thread
    assert max(incident_sent) < min(storm_sent), texts  # the incident's messages went first
