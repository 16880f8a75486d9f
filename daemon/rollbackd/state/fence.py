"""The fencing token a write carries (rollbackd.ha): set in the context of a leader's incident tasks.

A store that supports fencing (Postgres) checks it in the same transaction as the write and refuses
it with FencedError when another replica acquired the lease since; ``None`` (SQLite, single node, or
a request handler's own writes such as intake) writes unfenced.
"""

from __future__ import annotations

from contextvars import ContextVar

LEADER_ROW = "leader"

current: ContextVar[int | None] = ContextVar("rollbackd_fence", default=None)
