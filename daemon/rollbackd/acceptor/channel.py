"""The daemon <-> acceptor channel: length-prefixed pickles over a socketpair only the two ends hold.

The daemon sends one Hello (the settings, secrets included: never through argv or the environment);
the acceptor sends Reports. The end of the stream is the end of the other side.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rollbackd.config import Settings
from rollbackd.incidents.told import announced, log_decided
from rollbackd.reasons import Action, Reason, WebhookResult
from rollbackd.records import Alert, Decision, Incident

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")


@dataclass(frozen=True)
class Hello:
    settings: Settings
    daemon_socket: str  # the daemon's API on a unix socket: where handed-off requests go
    index: int
    host: str  # the daemon's listen address: the acceptor binds its own socket of it once it can serve
    port: int


@dataclass(frozen=True)
class Serving:
    """The acceptor's first message: its socket of the port is bound and served."""

    pid: int


@dataclass
class Report:
    """What an acceptor decided since its last report."""

    results: Counter[WebhookResult] = field(default_factory=Counter)
    handoffs: int = 0  # requests handed to the daemon
    alerts: Counter[tuple[str, Action, Reason]] = field(default_factory=Counter)
    # (service, reason) -> the first alert so decided, its decision, how many were
    announce: dict[tuple[str, Reason], tuple[Alert, Decision, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.results or self.alerts or self.announce or self.handoffs)


class Relay:
    """The acceptor's Teller (rollbackd.incidents.told.Tells) and result counter: it logs as the Teller
    does and keeps the rest for the daemon, which counts it and posts it through its own coalescing."""

    def __init__(self) -> None:
        self.report = Report()

    def webhook_result(self, result: WebhookResult) -> None:
        self.report.results[result] += 1

    def count(self, service: str | None, action: Action, reason: Reason, n: int = 1) -> None:
        self.report.alerts[(service or "", action, reason)] += n

    async def tell(self, alert: Alert, decision: Decision, incident: Incident | None) -> None:
        self.count(decision.service, decision.action, decision.reason)
        log_decided(alert, decision, incident)
        if announced(alert, decision):
            key = (decision.service or "", decision.reason)
            first = self.report.announce.get(key)
            self.report.announce[key] = (alert, decision, 1) if first is None else (first[0], first[1], first[2] + 1)

    def take(self) -> Report:
        report, self.report = self.report, Report()
        return report


def frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def read(reader: asyncio.StreamReader) -> Any:
    """The next message, or None once the other side has closed the channel."""
    try:
        head = await reader.readexactly(_LENGTH.size)
        return pickle.loads(await reader.readexactly(_LENGTH.unpack(head)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def read_blocking(sock: socket.socket) -> Any:
    """The first message, before the acceptor's event loop runs."""

    def exactly(n: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            chunk = sock.recv(n - len(chunks))
            if not chunk:
                raise ConnectionError("the daemon closed the acceptor channel before its hello")
            chunks += chunk
        return bytes(chunks)

    return pickle.loads(exactly(_LENGTH.unpack(exactly(_LENGTH.size))[0]))
