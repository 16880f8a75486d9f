"""High availability: replicas on one Postgres journal, one leader (README "Running replicas").

Every replica takes webhooks and API calls (the journal makes duplicates one alert); only the
leader runs incidents, schedules and drills. The leader holds a lease row in Postgres
(rollbackd.ha.lease) whose fencing token every incident write carries (rollbackd.state.fence).
SQLite is single node: the one daemon always leads, and its writes carry no token.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Protocol

HOST = socket.gethostname()


@dataclass(frozen=True)
class Identity:
    id: str
    host: str
    pid: int
    listen: str


class Leadership(Protocol):
    @property
    def leading(self) -> bool: ...

    @property
    def token(self) -> int | None: ...

    @property
    def replica_id(self) -> str: ...

    def holds(self, token: int | None) -> bool:
        """The lease under ``token`` still holds by the local bound (safe to call from any thread)."""
        ...


class SingleNode:
    """SQLite: the only daemon leads, always; nothing to fence."""

    leading = True
    token: int | None = None
    replica_id = "single"

    def holds(self, token: int | None) -> bool:
        return True


def identity(replica_id: str | None, listen: str) -> Identity:
    """Default id: host and listen port, so a restarted daemon takes its own lease back at once
    while two replicas (two hosts, or two ports of one host) never share one."""
    port = listen.rpartition(":")[2]
    return Identity(id=replica_id or f"{HOST}:{port}", host=HOST, pid=os.getpid(), listen=listen)


__all__ = ["HOST", "Identity", "Leadership", "SingleNode", "identity"]
