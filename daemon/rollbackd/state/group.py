"""Group commit (and group read): the work of concurrent webhook requests done in one round trip.

A storm of distinct alerts costs one commit per batch, not one per request, and one "journaled
already?" query per batch. A batch never waits while the store is idle: the first items go at once;
items that arrive while a round trip is in flight form the next batch (bounded by ``max_items``),
sent as soon as that one returns. Each caller awaits the batch holding its own items, so a 202 still
means "journaled"; a store error reaches every caller of the failed batch (each answers 503 and
Alertmanager re-sends).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from rollbackd.records import Alert, Decision, Event
from rollbackd.state.lanes import BULK

Row = tuple[Alert, str | None, float, Decision, Event]
T = TypeVar("T")
R = TypeVar("R")


class RowJournal(Protocol):
    async def journal_alerts(self, rows: Sequence[Row]) -> list[bool]: ...


@dataclass
class _Batch(Generic[T, R]):
    items: list[T] = field(default_factory=list)
    # One future per caller, so a caller that goes away (client hung up) cancels only its own wait,
    # never the round trip the others wait for (cheaper than an asyncio.shield per caller).
    waiters: list[asyncio.Future[R]] = field(default_factory=list)

    def resolve(self, result: R) -> None:
        for waiter in self.waiters:
            if not waiter.done():  # done: its caller was cancelled
                waiter.set_result(result)

    def fail(self, error: Exception) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(error)


class Batcher(Generic[T, R]):
    """Merges concurrent callers' items into shared calls of ``call``; each caller gets that call's result."""

    def __init__(self, call: Callable[[list[T]], Awaitable[R]], max_items: int = 2000, name: str = "batch") -> None:
        self.call = call
        self.max_items = max_items
        self.name = name
        self.calls = 0  # round trips made (a storm shows far fewer than requests)
        self._waiting: deque[_Batch[T, R]] = deque()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[T]) -> tuple[R, int]:
        """The result of the call that held ``items``, and where in that call's items they start."""
        batch = self._open_batch()
        start = len(batch.items)
        batch.items.extend(items)
        waiter: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        batch.waiters.append(waiter)
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"rollbackd-{self.name}")
        return await waiter, start

    def _open_batch(self) -> _Batch[T, R]:
        if not self._waiting or len(self._waiting[-1].items) >= self.max_items:
            self._waiting.append(_Batch())
        return self._waiting[-1]

    async def _work(self) -> None:
        BULK.set(True)  # this task's store calls take the bulk lane (lanes.py)
        try:
            while self._waiting:
                batch = self._waiting.popleft()  # from here on, new items open the next batch
                try:
                    result = await self.call(batch.items)
                except asyncio.CancelledError:  # shutdown: nobody waiting is told "done"
                    self._cancel(batch)
                    while self._waiting:
                        self._cancel(self._waiting.popleft())
                    raise
                except Exception as exc:
                    batch.fail(exc)
                else:
                    self.calls += 1
                    batch.resolve(result)
        finally:
            self._worker = None

    @staticmethod
    def _cancel(batch: _Batch[T, R]) -> None:
        for waiter in batch.waiters:
            waiter.cancel()


class GroupCommit:
    """A RowJournal whose transactions hold the rows of every request that arrived meanwhile."""

    def __init__(self, store: RowJournal, max_rows: int = 2000) -> None:
        self._batcher: Batcher[Row, list[bool]] = Batcher(
            lambda rows: store.journal_alerts(rows), max_rows, "group-commit"
        )  # looked up per call: wrappers work

    @property
    def commits(self) -> int:
        return self._batcher.calls

    async def journal_alerts(self, rows: Sequence[Row]) -> list[bool]:
        """Per row, whether it was new (see StateStore.journal_alerts)."""
        if not rows:
            return []
        new, start = await self._batcher.submit(rows)
        return new[start : start + len(rows)]


class SeenReader(Protocol):
    async def seen_alerts(self, keys: Sequence[str]) -> set[str]: ...


class GroupRead:
    """``seen_alerts`` of concurrent requests answered by one query."""

    def __init__(self, store: SeenReader, max_keys: int = 2000) -> None:
        self._batcher: Batcher[str, set[str]] = Batcher(lambda keys: store.seen_alerts(keys), max_keys, "group-read")

    async def seen_alerts(self, keys: Sequence[str]) -> set[str]:
        return (await self._batcher.submit(keys))[0] & set(keys) if keys else set()
