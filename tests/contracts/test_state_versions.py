"""The decision version (what the intake's view cache trusts): every write that changes what a decision
about a service reads moves it; reads and writes that change nothing a decision reads leave it. Both
backends, since the bump lives at the store boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from rollbackd.reasons import Action, IncidentState, Reason
from rollbackd.records import Decision, Pause
from rollbackd.state.postgres import PostgresStateStore
from rollbackd.state.sqlite import SqliteStateStore
from tests.contracts.state_stores import NOW, ROLLBACK, alert, decision_event, incident
from tests.contracts.test_state_releases import rel
from tests.support.pg import drop_database, fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    dsn = await fresh_database("rbversions") if request.param == "postgres" else None
    s: Any = (
        PostgresStateStore(PostgresStateStore.Options(dsn=dsn))
        if dsn
        else SqliteStateStore(SqliteStateStore.Options(path=str(tmp_path / "state.db")))
    )
    await s.open()
    yield s
    await s.close()
    if dsn:
        await drop_database(dsn)


def pause(service: str, kind: str = "pause") -> Pause:
    return Pause(service=service, kind=kind, reason="test", actor="alice", created_at=NOW)  # type: ignore[arg-type]


async def what_a_decision_reads(store: Any) -> tuple[Any, ...]:
    return await store.policy_view("rag", NOW + 1, 3600.0), await store.releases("rag")


def writes(store: Any) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    async def green() -> Any:
        return await store.change_release(
            (await store.releases("rag"))[0].id,
            change="green",
            actor="ci",
            note="ok",
            ts=NOW,
            green_at=NOW,
            green_by="ci",
        )

    return [
        ("pause", lambda: store.set_pause(pause("rag"))),
        ("hold", lambda: store.set_pause(pause("rag", "hold"))),
        ("resume", lambda: store.clear_pauses("rag")),
        ("global pause", lambda: store.set_pause(pause("*"))),
        ("global resume", lambda: store.clear_pauses("*")),
        (
            "incident opened",
            lambda: store.journal_alert(alert(), "rag", NOW, ROLLBACK, incident(), decision_event("i1")),
        ),
        (
            "incident finished",
            lambda: store.transition("i1", (IncidentState.PENDING,), IncidentState.RESOLVED, finished_at=NOW),
        ),
        ("incident created", lambda: store.create_incident(incident("i2"))),
        ("incident updated", lambda: store.update_incident("i2", state=IncidentState.CANCELLED)),
        ("release recorded", lambda: store.record_release(rel("v1"))),
        ("release green", green),
        ("release observed", lambda: store.update_release(1, image="localhost/rag:v1b")),
    ]


async def test_every_write_a_decision_reads_moves_the_version(store: Any) -> None:
    for name, write in writes(store):
        version, before = store.decision_version("rag"), await what_a_decision_reads(store)
        await write()
        assert await what_a_decision_reads(store) != before, f"{name}: the write changed nothing (bad test)"
        assert store.decision_version("rag") != version, f"{name}: the view changed, the version did not"


async def test_reads_and_decision_free_writes_leave_the_version(store: Any) -> None:
    version = store.decision_version("rag")
    await what_a_decision_reads(store)
    await store.journal_alerts(
        [(alert("n1"), "rag", NOW, Decision(Action.NOTIFY, Reason.NOTIFY_RULE, "rag"), decision_event())]
    )
    await store.append_event(decision_event())
    await store.set_pause(pause("search"))  # another service's pause is not this one's
    assert store.decision_version("rag") == version
    assert store.decision_version("search") != version
