"""Repeated suppressions in one message: a flapping alert against an exhausted budget (or a pause, a
hold, a cooldown) must not post one mention per firing. The first suppression of a service for a
reason in a window is announced; the next ones in the window are counted and announced with the next
one after it (``suppressed`` says how many were not)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rollbackd.reasons import Reason


@dataclass
class _Window:
    opened: float
    held_back: int = 0


class Coalescer:
    def __init__(self, window: float, clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.clock = clock
        self._windows: dict[tuple[str, Reason], _Window] = {}

    def admit(self, service: str, reason: Reason) -> int | None:
        """None: stay quiet (counted); else announce now, with how many were held back before it."""
        key = (service, reason)
        now = self.clock()
        current = self._windows.get(key)
        if current is not None and now - current.opened < self.window:
            current.held_back += 1
            return None
        self._windows[key] = _Window(opened=now)
        return current.held_back if current is not None else 0
