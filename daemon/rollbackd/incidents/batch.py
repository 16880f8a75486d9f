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

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rollbackd.records import Incident
from rollbackd.state import StateStore
from rollbackd.state.group import Row, RowJournal


@dataclass
class Body:
    known: set[str]
    active: list[Incident] | None = None
    rows: list[Row] = field(default_factory=list)
    reports: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @classmethod
    async def read(cls, store: StateStore, keys: list[str]) -> Body:
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

    async def flush(self, journal: RowJournal) -> None:
        """Write the pending rows in one transaction (shared with concurrent bodies: GroupCommit),
        then report them (never before they are stored)."""
        rows, reports = self.rows, self.reports
        self.rows, self.reports = [], []
        await journal.journal_alerts(rows)
        for report in reports:
            await report()
