"""Shared by the state contract suites (tests/contracts/test_state_*.py): one per Protocol of
rollbackd.state, each run on SQLite and on the real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rollbackd.reasons import Action, IncidentState, Reason
from rollbackd.records import Alert, Decision, Event, Incident, Trigger
from rollbackd.state import StateStore
from rollbackd.state.postgres import PostgresStateStore
from rollbackd.state.sqlite import SqliteStateStore
from tests.support.pg import drop_database, fresh_database

NOW = 1_800_000_000.0


def alert(fp: str = "f1", status: str = "firing") -> Alert:
    return Alert(
        fingerprint=fp,
        status=status,
        alertname="RAGGateFailRateHigh",  # type: ignore[arg-type]
        labels={"alertname": "RAGGateFailRateHigh", "service": "rag"},
        annotations={"summary": "9%"},
        starts_at=datetime(2026, 11, 22, 3, tzinfo=UTC),
        ends_at=None,
    )


def incident(iid: str = "i1", service: str = "rag", *, created: float = NOW, kind: str = "alert") -> Incident:
    return Incident(
        id=iid,
        service=service,
        state=IncidentState.PENDING,
        trigger=Trigger(
            kind=kind,
            reason="r",
            requested_by="alertmanager",  # type: ignore[arg-type]
            alertname="RAGGateFailRateHigh",
            fingerprint="f1",
            labels={"service": service},
        ),
        dry_run=False,
        created_at=created,
        plan=[{"type": "command", "argv": ["true"]}],
        context={"target": None},
    )


ROLLBACK = Decision(Action.ROLLBACK, Reason.ROLLBACK_RULE, "rag")


def decision_event(iid: str | None = None) -> Event:
    return Event(kind="decision", service="rag", incident_id=iid, reason="rollback_rule", data={"a": 1}, ts=NOW)


async def latest_event(store: StateStore, event: Event) -> Event:
    await store.append_event(event)
    return (await store.events(kinds=(event.kind,), limit=1))[0]


class OnSqlite:
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Any]:
        s = SqliteStateStore(SqliteStateStore.Options(path=str(tmp_path / "state.db")))
        await s.open()
        yield s
        await s.close()


class OnPostgres:
    @pytest.fixture
    async def store(self) -> AsyncIterator[Any]:
        dsn = await fresh_database("rbstate")
        s = PostgresStateStore(PostgresStateStore.Options(dsn=dsn))
        await s.open()
        try:
            yield s
        finally:
            await s.close()
            await drop_database(dsn)
