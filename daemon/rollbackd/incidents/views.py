"""The policy view and rollback target per service, kept in memory between alerts.

A storm of alerts for one service would otherwise read the same pauses, incidents and releases for
every alert. An entry is current while the store's decision version of the service is unchanged
(every writer of what a decision reads bumps it: rollbackd.state.versions) and for at most
``ttl`` seconds: writes of another process (an HA peer, ``rollbackd`` CLI against the same journal)
and the passing of time (the budget window, a pause's end) are then seen within that bound.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rollbackd.records import PolicyView
from rollbackd.state import StateStore

VIEW_TTL_S = 1.0


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    until: float
    value: tuple[Any, PolicyView]


class ViewCache:
    def __init__(self, store: StateStore, clock: Callable[[], float], ttl: float = VIEW_TTL_S) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}

    def version(self, service: str) -> int:
        """Read before the view is read: a write meanwhile makes the stored entry stale at once."""
        return self.store.decision_version(service)

    def get(self, service: str) -> tuple[Any, PolicyView] | None:
        entry = self._entries.get(service)
        if entry is None or entry.version != self.version(service) or self.clock() >= entry.until:
            return None
        return entry.value

    def put(self, service: str, version: int, value: tuple[Any, PolicyView]) -> None:
        view = value[1]
        ends = [p.until for p in (view.pause, view.hold) if p is not None and p.until is not None]
        self._entries[service] = _Entry(version, min([self.clock() + self.ttl, *ends]), value)


@functools.lru_cache(maxsize=1024)
def empty_view(service: str) -> PolicyView:
    """What a decision that reads nothing sees (frozen: one per service serves every such alert)."""
    return PolicyView(service, None, None, None, 0, None, None)
