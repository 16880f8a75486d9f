"""The acceptor's relay and the daemon's side of its report: counted once, coalesced once, as if the
daemon had decided every alert itself; and the channel's frames."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

from rollbackd.acceptor import channel
from rollbackd.incidents.told import Teller
from rollbackd.metrics import Metrics
from rollbackd.reasons import Action, Reason, WebhookResult
from rollbackd.records import Alert, Decision

NOTIFY = Decision(Action.NOTIFY, Reason.NOTIFY_RULE, "rag")


def alert(n: int, status: str = "firing") -> Alert:
    return Alert(
        fingerprint=f"f{n}",
        status=status,  # type: ignore[arg-type]
        alertname="StormNoise",
        labels={"alertname": "StormNoise", "service": "rag"},
        annotations={},
        starts_at=datetime(2026, 12, 6, tzinfo=UTC),
        ends_at=None,
    )


class Posts:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def post(self, message: Any) -> None:
        self.messages.append(message)


def teller(clock: list[float]) -> tuple[Teller, Posts, Metrics]:
    posts, metrics = Posts(), Metrics(["rag"])
    told = Teller(
        services={},
        notify=posts,  # type: ignore[arg-type]
        metrics=metrics,
        pager=None,  # type: ignore[arg-type]  # no paged reason here
        coalesce_window=60,
        clock=lambda: clock[0],
    )
    return told, posts, metrics


def counted(metrics: Metrics, action: Action, reason: Reason) -> float:
    return (
        metrics.registry.get_sample_value(
            "rollbackd_alerts_total", {"service": "rag", "decision": action.value, "reason": reason.value}
        )
        or 0.0
    )


def test_the_relay_keeps_counts_and_the_first_alert_of_each_announcement() -> None:
    relay = channel.Relay()
    for n in range(5):
        asyncio.run(relay.tell(alert(n), NOTIFY, None))
    asyncio.run(relay.tell(alert(9, "resolved"), Decision(Action.IGNORE, Reason.RESOLVED, "rag"), None))
    relay.count("rag", Action.SUPPRESSED, Reason.DUPLICATE, 3)
    relay.webhook_result(WebhookResult.ACCEPTED)
    report = relay.take()
    assert report.alerts == {
        ("rag", Action.NOTIFY, Reason.NOTIFY_RULE): 5,
        ("rag", Action.IGNORE, Reason.RESOLVED): 1,
        ("rag", Action.SUPPRESSED, Reason.DUPLICATE): 3,
    }
    (first, decision, times), *others = report.announce.values()
    assert (first.fingerprint, decision, times, others) == ("f0", NOTIFY, 5, [])  # quiet reasons never posted
    assert report.results == {WebhookResult.ACCEPTED: 1}
    assert not relay.take()  # taken: the next report starts empty


def test_the_daemon_coalesces_relayed_announcements_with_its_own() -> None:
    clock = [1000.0]
    told, posts, metrics = teller(clock)
    asyncio.run(told.tell(alert(0), NOTIFY, None))  # the daemon's own: announced
    asyncio.run(told.announce(alert(1), NOTIFY, 4))  # an acceptor's four in the same window: held back
    told.count("rag", Action.NOTIFY, Reason.NOTIFY_RULE, 4)
    assert len(posts.messages) == 1
    clock[0] += 61
    asyncio.run(told.announce(alert(5), NOTIFY, 2))  # the next window: one message, the four counted in it
    assert len(posts.messages) == 2
    assert "4 more suppression(s)" in posts.messages[1].text
    assert counted(metrics, Action.NOTIFY, Reason.NOTIFY_RULE) == 5


def test_frames_carry_a_report_across_a_socketpair_and_end_with_the_other_side() -> None:
    async def main() -> list[Any]:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        relay = channel.Relay()
        await relay.tell(alert(0), NOTIFY, None)
        theirs.sendall(channel.frame(channel.Serving(123)) + channel.frame(relay.take()))
        theirs.close()
        read = [await channel.read(reader) for _ in range(3)]
        writer.close()
        await writer.wait_closed()
        return read

    serving, report, end = asyncio.run(main())
    assert serving == channel.Serving(123)
    assert report.alerts == {("rag", Action.NOTIFY, Reason.NOTIFY_RULE): 1}
    assert end is None


def test_a_report_the_daemon_cannot_apply_is_logged_and_the_next_one_applies(caplog: Any) -> None:
    from types import SimpleNamespace

    from rollbackd.acceptor.pool import Acceptors

    clock = [1000.0]
    told, posts, metrics = teller(clock)
    failing = [True]

    def post(message: Any) -> None:
        if failing.pop() if failing else False:
            raise RuntimeError("the queue refused it")
        posts.messages.append(message)

    told.notify = SimpleNamespace(post=post)  # type: ignore[assignment]
    pool = Acceptors(SimpleNamespace(metrics=metrics, told=told), "127.0.0.1", 0, 1)  # type: ignore[arg-type]

    def report() -> channel.Report:
        relay = channel.Relay()
        asyncio.run(relay.tell(alert(len(posts.messages)), NOTIFY, None))
        return relay.take()

    asyncio.run(pool._apply_logged(0, report()))
    assert "acceptor_report_failed" in caplog.text
    clock[0] += 61
    asyncio.run(pool._apply_logged(0, report()))
    assert len(posts.messages) == 1
    assert counted(metrics, Action.NOTIFY, Reason.NOTIFY_RULE) == 2


def test_status_says_how_many_acceptors_serve() -> None:
    from rollbackd.cli.render import status

    body: dict[str, Any] = {"mode": "auto", "paused": None, "services": {}}
    assert "acceptors" not in status(body)  # none configured: no line
    assert "acceptors:    1 of 1 serving" in status({**body, "acceptors": {"configured": 1, "serving": 1}})
    missing = status({**body, "acceptors": {"configured": 2, "serving": 1}})
    assert "acceptors:    1 of 2 serving  (the daemon takes their share; log: acceptor_exited)" in missing
