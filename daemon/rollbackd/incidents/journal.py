"""The runner's view of the state store: every read and write waits out a store outage.

A journal write that fails with StateError (Postgres cut, SQLite locked, a timeout) is retried with
backoff, never guessed around: the runner does not go on until what it did is on record, and a
compare-and-set whose first try may have landed re-reads the incident instead of assuming. After
``limit`` seconds of one call failing, StoreUnavailable is raised and the runner gives the incident
up (page at once, `failed` as soon as the store answers: ``bounded=False`` waits for that). While any
call waits, ``outage`` says since when and why (``/readyz`` shows it).

    IncidentActiveError is not an outage (the store answered); it goes straight to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rollbackd.errors import IncidentActiveError, StateError, StoreUnavailable
from rollbackd.reasons import IncidentState, StepState
from rollbackd.records import Event, Incident, Pause, StepRecord
from rollbackd.state import StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0


@dataclass
class Outage:
    """What /readyz reports while the runner waits for the store."""

    since: float | None = None
    error: str | None = None
    waiting: dict[str, int] = field(default_factory=dict)  # what waits (call name) -> how many

    def describe(self, now: float) -> str | None:
        if self.since is None:
            return None
        calls = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(self.waiting.items()))
        return (
            f"state store unreachable for {now - self.since:.0f}s ({self.error}); "
            f"the runner is waiting to journal: {calls or 'nothing'}"
        )


class Journal:
    def __init__(
        self,
        store: StateStore,
        *,
        limit: float,
        clock: Callable[[], float] = time.time,
        on_step_started: Callable[[str], None] = lambda incident_id: None,
    ) -> None:
        self.store = store
        self.on_step_started = on_step_started
        self.limit = limit
        self.clock = clock
        self.outage = Outage()

    async def call(self, what: str, fn: Callable[[], Awaitable[T]], *, bounded: bool = True) -> T:
        """``fn()`` until it does not raise StateError; up to ``limit`` seconds, or for ever if not ``bounded``.
        However the call ends (an answer, the limit, a cancellation while it waits: a leader stepping
        down), it stops counting as waiting, so /readyz never reports a wait nobody is doing."""
        first: float | None = None
        delay = BACKOFF_FIRST_S
        try:
            while True:
                try:
                    result = await fn()
                except IncidentActiveError:
                    raise
                except StateError as exc:
                    now = time.monotonic()
                    if first is None:
                        first = now
                        self._begin(what, exc)
                    elif bounded and now - first > self.limit:
                        raise StoreUnavailable(
                            f"state store unreachable for {now - first:.0f}s (limit {self.limit:g}s) at {what}: {exc}"
                        ) from exc
                    if self.outage.since is None:
                        self.outage.since = self.clock()
                    self.outage.error = str(exc)
                else:
                    if first is not None:
                        first = None
                        self._end(what, recovered=True)
                    return result
                await asyncio.sleep(delay)  # outside the handler: a cancellation here reaches the finally
                delay = min(delay * 2, BACKOFF_MAX_S)
        finally:
            if first is not None:
                self._end(what, recovered=False)

    def _begin(self, what: str, exc: StateError) -> None:
        self.outage.waiting[what] = self.outage.waiting.get(what, 0) + 1
        log.error("store_unreachable", exc_info=exc, extra={"call": what})

    def _end(self, what: str, *, recovered: bool) -> None:
        left = self.outage.waiting.pop(what, 1) - 1
        if left > 0:
            self.outage.waiting[what] = left
        if recovered:  # the store answers again: the outage is over for everyone
            self.outage.since = self.outage.error = None
            log.info("store_back", extra={"call": what})
        elif not self.outage.waiting:
            self.outage.since = self.outage.error = None

    # ---- the calls the runner makes -------------------------------------------------------------
    async def get_incident(self, incident_id: str) -> Incident | None:
        return await self.call("get_incident", lambda: self.store.get_incident(incident_id))

    async def steps(self, incident_id: str, *, bounded: bool = True) -> list[StepRecord]:
        return await self.call("steps", lambda: self.store.steps(incident_id), bounded=bounded)

    async def step_started(self, incident_id: str, index: int, name: str, type_: str, attempt: int, ts: float) -> None:
        await self.call("step_started", lambda: self.store.step_started(incident_id, index, name, type_, attempt, ts))
        self.on_step_started(incident_id)

    async def step_finished(
        self, incident_id: str, index: int, state: StepState, ts: float, output: Mapping[str, Any], error: str | None
    ) -> None:
        await self.call("step_finished", lambda: self.store.step_finished(incident_id, index, state, ts, output, error))

    async def update_incident(self, incident_id: str, **fields: Any) -> Incident:
        return await self.call("update_incident", lambda: self.store.update_incident(incident_id, **fields))

    async def append_event(self, event: Event, *, bounded: bool = True) -> int:
        return await self.call("append_event", lambda: self.store.append_event(event), bounded=bounded)

    async def events(self, incident_id: str, kinds: tuple[str, ...]) -> list[Event]:
        return await self.call("events", lambda: self.store.events(incident_id=incident_id, kinds=kinds, limit=1000))

    async def set_pause(self, pause: Pause, *, bounded: bool = True) -> None:
        await self.call("set_pause", lambda: self.store.set_pause(pause), bounded=bounded)

    async def transition(
        self,
        incident_id: str,
        from_states: tuple[IncidentState, ...],
        to: IncidentState,
        *,
        bounded: bool = True,
        **fields: Any,
    ) -> Incident | None:
        """Compare-and-set, retried: when an earlier try may have landed (its answer was lost), the
        incident is read again and an incident already in ``to`` counts as done, never as "someone else"."""
        tried = False

        async def once() -> Incident | None:
            nonlocal tried
            if tried:
                current = await self.store.get_incident(incident_id)
                if current is not None and current.state is to:
                    return current
            tried = True
            return await self.store.transition(incident_id, from_states, to, **fields)

        return await self.call("transition", once, bounded=bounded)
