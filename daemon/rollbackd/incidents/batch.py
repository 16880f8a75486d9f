"""One webhook body, decided alert by alert but written once.

A body of 4,000 alerts must be answered in well under Alertmanager's timeout. What costs is the
round trip per alert (a "seen?" read, the policy view, a commit), not the decision. So, per body:
the journaled keys are read in one query (the policy view is cached per service: views.py), and
the alerts that open no incident are journaled in one transaction at the end, their logs, metrics
and Slack posts emitted only once that transaction committed. That transaction is shared with the bodies of
concurrent requests (rollbackd.state.group). An alert that opens an incident still takes the
synchronous path (the store's one-active-incident index decides races), after the pending rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from rollbackd.errors import StateError
from rollbackd.records import Incident
from rollbackd.state import StateStore
from rollbackd.state.group import Row, RowJournal, SeenReader


class Body:
    """The pending rows of one webhook body (a plain slotted class: one is made per request)."""

    __slots__ = ("active", "already", "keys", "known", "reports", "rows", "settled", "waits")

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.active: list[Incident] | None = None
        self.rows: list[Row] = []
        self.reports: list[Callable[[], Awaitable[None]]] = []
        self.keys: list[str] = []
        # Resolved once this body's rows are committed (or failed). A concurrent request that sees one of
        # its alerts as a duplicate waits for it: its 202 must not come before the original is journaled.
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waits: set[asyncio.Future[None]] = set()
        self.already: set[str] = set()  # found journaled by the insert itself (flush)

    @classmethod
    async def read(cls, store: SeenReader | None, keys: list[str]) -> Body:
        """The keys among ``keys`` journaled before; with no reader, none are read now and the insert
        finds them instead (``already``): one round trip per batch, not two."""
        return cls(known=await store.seen_alerts(keys) if keys and store is not None else set())

    def defer(self, row: Row, report: Callable[[], Awaitable[None]]) -> None:
        self.rows.append(row)
        self.reports.append(report)
        self.keys.append(row[0].key)

    def changed(self, service: str) -> None:
        """An incident opened or ended for ``service``: the active list is stale (the view cache
        learns it from the store's decision version)."""
        self.active = None

    async def active_incidents(self, store: StateStore) -> list[Incident]:
        if self.active is None:
            self.active = await store.active_incidents()
        return self.active

    def settle(self, error: BaseException | None) -> None:
        if self.settled.done():
            return
        if error is None:
            self.settled.set_result(None)
        else:
            self.settled.set_exception(error if isinstance(error, Exception) else StateError("not journaled"))
            self.settled.exception()  # read here: nobody may be waiting for it

    async def journaled_elsewhere(self) -> None:
        """Wait for the commits of the other bodies this one's duplicates came from (their error if any)."""
        for settled in self.waits:
            await asyncio.shield(settled)

    async def flush(self, journal: RowJournal) -> None:
        """Write the pending rows in one transaction (shared with concurrent bodies: GroupCommit),
        then report the new ones (never before they are stored); the others were journaled already."""
        rows, reports = self.rows, self.reports
        self.rows, self.reports = [], []
        new = await journal.journal_alerts(rows)
        for row, report, is_new in zip(rows, reports, new, strict=True):
            if is_new:
                await report()
            else:
                self.already.add(row[0].key)
