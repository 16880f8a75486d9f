"""Incidents between "opened" and "first step started": while one is, storm work steps aside.

In an alert storm the event loop is busy with the storm's requests, and an incident needs a few round
trips (its row, the transition to running, its steps) before its first step starts, each one waiting a
turn of that busy loop. So a webhook body that can act on nothing (notify-only, ignored, unknown
service) waits, at most ``bound`` seconds, while an incident is starting: the rollback that matters goes
first, the storm only answers a little later. An incident counts as starting for at most ``window``
seconds (one waiting minutes for Prometheus to confirm its alert must not slow the storm that long).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

YIELD_BOUND_S = 0.1
WINDOW_S = 1.0


class Starts:
    def __init__(self, bound: float = YIELD_BOUND_S, window: float = WINDOW_S) -> None:
        self.bound = bound
        self.window = window
        self._starting: dict[str, float] = {}
        self._none = asyncio.Event()
        self._none.set()

    def begin(self, incident_id: str) -> None:
        self._starting[incident_id] = time.monotonic()
        self._none.clear()

    def end(self, incident_id: str) -> None:
        """Its first step started (or it ended, or waits for something else: past the window)."""
        self._starting.pop(incident_id, None)
        if not self._starting:
            self._none.set()

    def __bool__(self) -> bool:
        return bool(self._starting)

    async def step_aside(self) -> None:
        too_old = time.monotonic() - self.window
        for incident_id in [i for i, began in self._starting.items() if began < too_old]:
            self.end(incident_id)
        if self._starting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none.wait(), self.bound)
