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
from dataclasses import dataclass, field

from rollbackd.errors import StateError
from rollbackd.records import Incident
from rollbackd.state import StateStore
from rollbackd.state.group import Row, RowJournal, SeenReader


@dataclass
class Body:
    known: set[str]
    active: list[Incident] | None = None
    rows: list[Row] = field(default_factory=list)
    reports: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    # Resolved once this body's rows are committed (or failed). A concurrent request that sees one of
    # its alerts as a duplicate waits for it: its 202 must not come before the original is journaled.
    settled: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    waits: set[asyncio.Future[None]] = field(default_factory=set)

    @classmethod
    async def read(cls, store: SeenReader, keys: list[str]) -> Body:
        return cls(known=await store.seen_alerts(keys) if keys else set())

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
        then report them (never before they are stored)."""
        rows, reports = self.rows, self.reports
        self.rows, self.reports = [], []
        await journal.journal_alerts(rows)
        for report in reports:
            await report()
