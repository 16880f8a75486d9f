"""Group commit: the alert rows of concurrent webhook requests journaled in one transaction.

A storm of distinct alerts costs one commit per batch, not one per request. A batch never waits
while the store is idle: the first rows go at once; rows that arrive while a commit is in flight
form the next batch (bounded by ``max_rows``), written as soon as that commit returns. Each caller
awaits the commit of its own rows, so a 202 still means "journaled"; a store error reaches every
caller of the failed batch (each answers 503 and Alertmanager re-sends).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rollbackd.records import Alert, Decision, Event

Row = tuple[Alert, str | None, float, Decision, Event]


class RowJournal(Protocol):
    async def journal_alerts(self, rows: Sequence[Row]) -> None: ...


@dataclass
class _Batch:
    done: asyncio.Future[None]
    rows: list[Row] = field(default_factory=list)


class GroupCommit:
    """A RowJournal that merges concurrent callers' rows into shared transactions of ``store``."""

    def __init__(self, store: RowJournal, max_rows: int = 2000) -> None:
        self.store = store
        self.max_rows = max_rows
        self.commits = 0  # transactions written (a storm shows far fewer than requests)
        self._waiting: deque[_Batch] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def journal_alerts(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        batch = self._open_batch()
        batch.rows.extend(rows)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="rollbackd-group-commit")
        # shield: a caller that goes away (client hung up) must not cancel the others' commit
        await asyncio.shield(batch.done)

    def _open_batch(self) -> _Batch:
        if not self._waiting or len(self._waiting[-1].rows) >= self.max_rows:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.add_done_callback(_retrieve)
            self._waiting.append(_Batch(done))
        return self._waiting[-1]

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting.popleft()  # from here on, new rows open the next batch
                try:
                    await self.store.journal_alerts(batch.rows)
                except asyncio.CancelledError:  # shutdown: nobody waiting is told "journaled"
                    batch.done.cancel()
                    self._cancel_waiting()
                    raise
                except Exception as exc:
                    batch.done.set_exception(exc)
                else:
                    self.commits += 1
                    batch.done.set_result(None)
        finally:
            self._writer = None

    def _cancel_waiting(self) -> None:
        while self._waiting:
            self._waiting.popleft().done.cancel()


def _retrieve(done: asyncio.Future[None]) -> None:
    # a caller that went away never reads its batch's error: read it here, so it is not reported as lost
    if not done.cancelled():
        done.exception()
