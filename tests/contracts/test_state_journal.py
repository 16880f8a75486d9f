"""The journal Protocols of the state store (AlertJournal, IncidentJournal, EventLog), on SQLite and on the
real PostgreSQL: the same tests for both drivers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rollbackd.errors import IncidentActiveError, StateError
from rollbackd.reasons import Action, EventKind, IncidentState, Reason, StepState
from rollbackd.records import Decision, Event
from rollbackd.state import StateStore
from rollbackd.state.postgres import PostgresStateStore
from rollbackd.state.sqlite import SqliteStateStore
from tests.contracts.state_stores import (
    NOW,
    ROLLBACK,
    OnPostgres,
    OnSqlite,
    alert,
    decision_event,
    incident,
    latest_event,
)


class AlertJournalContract:
    """Alerts and decisions, journaled with their incident and event in one transaction."""

    async def test_alert_decision_incident_in_one_transaction(self, store: StateStore) -> None:
        a = alert()
        assert not await store.seen_alert(a.key)
        await store.journal_alert(a, "rag", NOW, ROLLBACK, incident(), decision_event("i1"))
        assert await store.seen_alert(a.key)
        (row,) = await store.recent_alerts("rag", 10)
        assert (row["action"], row["reason"], row["incident_id"], row["labels"]["service"]) == (
            "rollback",
            "rollback_rule",
            "i1",
            "rag",
        )
        inc = await store.get_incident("i1")
        assert inc is not None and inc.state is IncidentState.PENDING and inc.trigger.labels == {"service": "rag"}
        (event,) = await store.events(service="rag")
        assert event.kind == "decision" and event.data == {"a": 1}

    async def test_duplicates_counted_on_the_alert(self, store: StateStore) -> None:
        a = alert()
        await store.journal_alert(a, "rag", NOW, ROLLBACK, None, decision_event())
        await store.add_duplicates({a.key: 5})
        await store.add_duplicates({a.key: 2})
        (row,) = await store.recent_alerts(None, 10)
        assert row["duplicates"] == 7

    async def test_a_batch_says_which_rows_were_new_and_logs_only_those(self, store: StateStore) -> None:
        notify = Decision(Action.NOTIFY, Reason.NOTIFY_RULE, "rag")

        def row(fp: str, marker: str) -> Any:
            return (alert(fp), "rag", NOW, notify, Event(kind="decision", service="rag", reason=marker, data={}))

        await store.journal_alert(alert("old"), "rag", NOW - 60, ROLLBACK, None, decision_event())
        before = await store.recent_alerts(None, 10)
        new = await store.journal_alerts([row("a", "a"), row("old", "old-again"), row("b", "b"), row("a", "a-again")])
        assert new == [True, False, True, False]  # journaled before, or earlier in the same batch: not new
        rows = {r["fingerprint"]: r for r in await store.recent_alerts(None, 10)}
        assert rows["old"] == before[0]  # left exactly as it was
        assert set(rows) == {"old", "a", "b"}
        reasons = sorted(e.reason or "" for e in await store.events(kinds=("decision",), limit=10))
        assert reasons == ["a", "b", "rollback_rule"]  # no journal line for a row that was not new
        assert await store.journal_alerts([]) == []

    @pytest.mark.parametrize("count", [3, 250])  # Postgres: one statement for a storm's batch, a transaction above 200
    async def test_a_batch_logs_its_new_rows_in_order(self, store: StateStore, count: int) -> None:
        notify = Decision(Action.NOTIFY, Reason.NOTIFY_RULE, "rag")
        await store.journal_alert(alert("f1"), "rag", NOW - 60, notify, None, decision_event())
        rows = [
            (alert(f"f{n}"), "rag", NOW, notify, Event(kind="decision", service="rag", reason=f"r{n:04d}", data={}))
            for n in range(count)
        ]
        assert await store.journal_alerts(rows) == [n != 1 for n in range(count)]
        lines = await store.events(kinds=("decision",), limit=count + 5)
        assert [e.reason for e in reversed(lines)][1:] == [f"r{n:04d}" for n in range(count) if n != 1]

    async def test_retention_prunes_old_unlinked_alerts_and_events_only(self, store: StateStore) -> None:
        old, young = NOW - 100 * 86400, NOW - 3600
        notify = Decision(Action.NOTIFY, Reason.NOTIFY_RULE, "rag")
        journal = [  # (alert, received_at, decision, incident): what each row is
            (alert("done"), old, notify, None),
            (alert("done", "resolved"), old, notify, None),  # resolved: go
            (alert("firing"), old, notify, None),  # still firing (no resolution journaled): kept
            (alert("acted"), old, ROLLBACK, incident("i-old", created=old)),  # opened an incident: kept
            (alert("young"), young, notify, None),
            (alert("young", "resolved"), young, notify, None),  # young
        ]
        for a, at, decision, inc in journal:
            event = Event(
                kind="decision", service="rag", incident_id=inc.id if inc else None, reason="r", data={}, ts=at
            )
            await store.journal_alert(a, "rag", at, decision, inc, event)
        await store.append_event(Event(kind="pause", service="rag", reason="old", data={}, ts=old))
        counts = await store.prune_journal(NOW - 90 * 86400)
        assert counts == {"alerts_firing": 1, "alerts_resolved": 1, "events": 4}  # the log lines of old alerts go
        kept = {(r["fingerprint"], r["status"]) for r in await store.recent_alerts(None, 100)}
        assert kept == {("firing", "firing"), ("acted", "firing"), ("young", "firing"), ("young", "resolved")}
        events = await store.events(limit=100)
        assert sorted((e.incident_id or "", e.ts) for e in events) == [("", young), ("", young), ("i-old", old)]
        assert await store.get_incident("i-old") is not None
        assert await store.prune_journal(NOW - 90 * 86400) == {"alerts_firing": 0, "alerts_resolved": 0, "events": 0}


class IncidentJournalContract:
    """Incidents (one active per service, compare-and-set) and their steps, written ahead."""

    async def test_open_is_idempotent_and_ping(self, store: StateStore) -> None:
        await store.append_event(decision_event())
        await store.open()  # the schema is created once and reopening is harmless: nothing is lost
        await store.ping()
        assert [e.reason for e in await store.events(limit=10)] == ["rollback_rule"]

    async def test_one_active_incident_per_service(self, store: StateStore) -> None:
        assert await store.create_incident(incident("i1"))
        assert not await store.create_incident(incident("i2"))
        assert await store.create_incident(incident("i3", "search"))
        with pytest.raises(IncidentActiveError):  # the constraint, and only it, reads as "incident active"
            await store.journal_alert(alert("f2"), "rag", NOW, ROLLBACK, incident("i4"), decision_event("i4"))
        assert not await store.seen_alert(alert("f2").key)  # all or nothing
        with pytest.raises(StateError) as other:  # any other violation is a plain store error
            await store.journal_alert(
                alert("f3"), "other", NOW, ROLLBACK, incident("i1", "other"), decision_event("i1")
            )
        assert not isinstance(other.value, IncidentActiveError)
        await store.transition("i1", (IncidentState.PENDING,), IncidentState.RESOLVED, finished_at=NOW)
        assert await store.create_incident(incident("i2"))

    async def test_transition_is_compare_and_set(self, store: StateStore) -> None:
        await store.create_incident(incident())
        running = await store.transition("i1", (IncidentState.PENDING,), IncidentState.RUNNING, started_at=NOW)
        assert running is not None and running.state is IncidentState.RUNNING and running.started_at == NOW
        assert await store.transition("i1", (IncidentState.PENDING,), IncidentState.CANCELLED) is None
        assert [i.id for i in await store.active_incidents()] == ["i1"]
        await store.transition("i1", (IncidentState.RUNNING,), IncidentState.FAILED, error="boom")
        assert await store.active_incidents() == []
        final = await store.get_incident("i1")
        assert final is not None and final.error == "boom"

    async def test_steps_are_journaled_write_ahead(self, store: StateStore) -> None:
        await store.create_incident(incident())
        await store.step_started("i1", 0, "mark", "command", 1, NOW)
        (step,) = await store.steps("i1")
        assert step.state is StepState.STARTED and step.attempts == 1 and step.finished_at is None
        await store.step_finished("i1", 0, StepState.DONE, NOW + 2, {"exit_code": 0}, None)
        await store.step_started("i1", 1, "wait", "command", 1, NOW + 2)
        await store.step_started("i1", 1, "wait", "command", 2, NOW + 3)  # a retry re-opens the same row
        done, wait = await store.steps("i1")
        assert done.state is StepState.DONE and done.output == {"exit_code": 0} and done.duration == 2
        assert wait.attempts == 2 and wait.state is StepState.STARTED

    async def test_context_and_thread_updates(self, store: StateStore) -> None:
        await store.create_incident(incident())
        updated = await store.update_incident(
            "i1", context={"target": {"version": "v1"}}, thread={"ts": "1.2"}, abort_requested=True
        )
        assert updated.context == {"target": {"version": "v1"}} and updated.thread == {"ts": "1.2"}
        assert updated.abort_requested
        with pytest.raises(ValueError):
            await store.update_incident("i1", service="other")


class EventLogContract:
    """Journal events, filtered and newest first; verdicts in their own field."""

    async def test_events_filter_newest_first(self, store: StateStore) -> None:
        for kind in ("decision", "pause", "decision"):
            await store.append_event(Event(kind=kind, service="rag", data={}, ts=NOW))
        assert [e.kind for e in await store.events(kinds=("decision",))] == ["decision", "decision"]
        ids = [e.id for e in await store.events()]
        assert ids == sorted(ids, reverse=True)

    async def test_verdicts_have_their_own_field_and_old_rows_still_read(self, store: Any) -> None:
        await store.append_event(Event(kind=EventKind.VERIFICATION, service="rag", verdict="pass", data={"v": 1}))
        await store.append_event(Event(kind=EventKind.DRILL, service="rag", verdict="GO", data={"verdict": "GO"}))
        # Rows written before Event.verdict existed carried the verdict in `reason`.
        for kind, verdict in (("verification", "fail"), ("drill", "NO-GO")):
            await store._execute(
                "INSERT INTO rb_events (ts, service, incident_id, kind, reason, actor, data)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7)",
                NOW,
                "rag",
                None,
                kind,
                verdict,
                None,
                "{}",
            )
        read = [(e.kind, e.verdict, e.reason) for e in await store.events(kinds=("verification", "drill"))]
        assert sorted(read) == [
            ("drill", "GO", None),
            ("drill", "NO-GO", None),
            ("verification", "fail", None),
            ("verification", "pass", None),
        ]
        decision = await latest_event(store, decision_event())
        assert (decision.reason, decision.verdict) == ("rollback_rule", None)


class TestSqliteAlerts(OnSqlite, AlertJournalContract):
    pass


class TestPostgresAlerts(OnPostgres, AlertJournalContract):
    pass


class TestSqliteIncidents(OnSqlite, IncidentJournalContract):
    pass


class TestPostgresIncidents(OnPostgres, IncidentJournalContract):
    pass


class TestSqliteEvents(OnSqlite, EventLogContract):
    pass


class TestPostgresEvents(OnPostgres, EventLogContract):
    pass


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    first: Any = SqliteStateStore(SqliteStateStore.Options(path=path))
    await first.open()
    await first.create_incident(incident())
    await first.close()
    second: Any = SqliteStateStore(SqliteStateStore.Options(path=path))
    await second.open()
    assert [i.id for i in await second.active_incidents()] == ["i1"]
    await second.close()


async def test_postgres_unreachable_is_a_state_error() -> None:
    s = PostgresStateStore(PostgresStateStore.Options(dsn="postgresql://nobody@127.0.0.1:1/x", timeout=2))
    with pytest.raises(StateError) as exc:
        await s.open()
    assert "cannot connect" in str(exc.value)
