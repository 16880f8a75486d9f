"""Notifier: where humans read what rollbackd does. One root message per incident, one threaded reply
per step, the root updated with the outcome. A Slack outage never delays a rollback: the runner hands
messages to a bounded queue (rollbackd.notify.queue) and goes on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

BACKENDS: Final[Mapping[str, str]] = {
    "slack": "rollbackd.notify.slack:SlackNotifier",
    "null": "rollbackd.notify.null:NullNotifier",
}

ThreadRef = dict[str, str]  # backend-specific, e.g. {"channel": "C123", "ts": "1700000000.000100"}
Severity = Literal["info", "good", "warning", "danger"]
MessageKind = Literal["opened", "step", "finished", "decision", "escalation"]


@dataclass(frozen=True, slots=True)
class Message:
    kind: MessageKind
    title: str
    service: str | None = None
    incident_id: str | None = None
    text: str = ""
    fields: tuple[tuple[str, str], ...] = ()
    severity: Severity = "info"
    mention: str | None = None  # who to call (escalation), e.g. "<!subteam^S0123>"


class Notifier(Protocol):
    name: str
    threads: bool  # post returns a reference replies thread under (Slack's bot mode); else all is flat

    async def post(self, message: Message, thread: ThreadRef | None) -> ThreadRef | None:
        """Post a message (in ``thread`` when given); returns a reference replies can thread under."""
        ...

    async def update(self, thread: ThreadRef, message: Message) -> None:
        """Replace the root message of a thread (no-op where the backend cannot)."""
        ...

    async def find(self, root: Message) -> ThreadRef | None:
        """The thread ``root``'s incident already has at the far end (a root posted whose answer, or whose
        journaling, was lost), or None: there is none, or the backend cannot look. Raises BackendError
        when it could look but the far end fails just now (then no root is posted again yet)."""
        ...

    async def close(self) -> None: ...
