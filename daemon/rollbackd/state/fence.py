"""The fencing token a write carries (rollbackd.ha): set in the context of a leader's incident tasks.

A store that supports fencing (Postgres) checks it in the same transaction as the write and refuses
it with FencedError when another replica acquired the lease since; ``None`` (SQLite, single node, or
a request handler's own writes such as intake) writes unfenced.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

LEADER_ROW = "leader"

current: ContextVar[int | None] = ContextVar("rollbackd_fence", default=None)
# Whether the lease of that token still holds by this replica's local bound; callable from any thread.
# What a step does outside the journal in a thread (Docker calls) asks it before each call: a leader
# woken from a pause longer than its lease (SIGSTOP, a VM pause) stops before the loop has noticed.
holding: ContextVar[Callable[[], bool] | None] = ContextVar("rollbackd_fence_holding", default=None)
