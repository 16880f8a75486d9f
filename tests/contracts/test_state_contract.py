"""The StateStore contract: SQLite (embedded default) and PostgreSQL (asyncpg, the real server) pass the
same tests. Postgres gets a fresh database per test from tests/support/pg.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rollbackd.errors import IncidentActiveError, StateError
from rollbackd.reasons import Action, EventKind, IncidentState, Reason, StepState
from rollbackd.records import Alert, Decision, Event, Incident, Pause, Release, Trigger
from rollbackd.state import StateStore
from rollbackd.state.postgres import PostgresStateStore
from rollbackd.state.sqlite import SqliteStateStore
from tests.support.pg import drop_database, fresh_database

NOW = 1_800_000_000.0


def alert(fp: str = "f1", status: str = "firing") -> Alert:
    return Alert(fingerprint=fp, status=status, alertname="RAGGateFailRateHigh",  # type: ignore[arg-type]
                 labels={"alertname": "RAGGateFailRateHigh", "service": "rag"}, annotations={"summary": "9%"},
                 starts_at=datetime(2026, 11, 22, 3, tzinfo=UTC), ends_at=None)


def incident(iid: str = "i1", service: str = "rag", *, created: float = NOW, kind: str = "alert") -> Incident:
    return Incident(id=iid, service=service, state=IncidentState.PENDING,
                    trigger=Trigger(kind=kind, reason="r", requested_by="alertmanager",  # type: ignore[arg-type]
                                    alertname="RAGGateFailRateHigh", fingerprint="f1", labels={"service": service}),
                    dry_run=False, created_at=created, plan=[{"type": "command", "argv": ["true"]}],
                    context={"target": None})


ROLLBACK = Decision(Action.ROLLBACK, Reason.ROLLBACK_RULE, "rag")


def decision_event(iid: str | None = None) -> Event:
    return Event(kind="decision", service="rag", incident_id=iid, reason="rollback_rule", data={"a": 1}, ts=NOW)


async def _one(store: StateStore, event: Event) -> Event:
    await store.append_event(event)
    return (await store.events(kinds=(event.kind,), limit=1))[0]


class StateStoreContract:
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[StateStore]:
        raise NotImplementedError

    async def test_open_is_idempotent_and_ping(self, store: StateStore) -> None:
        await store.append_event(decision_event())
        await store.open()  # the schema is created once and reopening is harmless: nothing is lost
        await store.ping()
        assert [e.reason for e in await store.events(limit=10)] == ["rollback_rule"]

    async def test_alert_decision_incident_in_one_transaction(self, store: StateStore) -> None:
        a = alert()
        assert not await store.seen_alert(a.key)
        await store.journal_alert(a, "rag", NOW, ROLLBACK, incident(), decision_event("i1"))
        assert await store.seen_alert(a.key)
        (row,) = await store.recent_alerts("rag", 10)
        assert (row["action"], row["reason"], row["incident_id"], row["labels"]["service"]) == (
            "rollback", "rollback_rule", "i1", "rag")
        inc = await store.get_incident("i1")
        assert inc is not None and inc.state is IncidentState.PENDING and inc.trigger.labels == {"service": "rag"}
        (event,) = await store.events(service="rag")
        assert event.kind == "decision" and event.data == {"a": 1}

    async def test_one_active_incident_per_service(self, store: StateStore) -> None:
        assert await store.create_incident(incident("i1"))
        assert not await store.create_incident(incident("i2"))
        assert await store.create_incident(incident("i3", "search"))
        with pytest.raises(IncidentActiveError):  # the constraint, and only it, reads as "incident active"
            await store.journal_alert(alert("f2"), "rag", NOW, ROLLBACK, incident("i4"), decision_event("i4"))
        assert not await store.seen_alert(alert("f2").key)  # all or nothing
        with pytest.raises(StateError) as other:  # any other violation is a plain store error
            await store.journal_alert(alert("f3"), "other", NOW, ROLLBACK, incident("i1", "other"),
                                      decision_event("i1"))
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
        updated = await store.update_incident("i1", context={"target": {"version": "v1"}}, thread={"ts": "1.2"},
                                              abort_requested=True)
        assert updated.context == {"target": {"version": "v1"}} and updated.thread == {"ts": "1.2"}
        assert updated.abort_requested
        with pytest.raises(ValueError):
            await store.update_incident("i1", service="other")

    async def test_policy_view_counts_budget_and_cooldown(self, store: StateStore) -> None:
        for n, end in ((1, NOW - 7 * 3600), (2, NOW - 3600), (3, NOW - 600)):
            await store.create_incident(incident(f"i{n}", created=end - 60))
            await store.transition(f"i{n}", (IncidentState.PENDING,), IncidentState.RESOLVED, finished_at=end)
        await store.create_incident(incident("m1", created=NOW - 100, kind="manual"))  # manual: not counted
        await store.transition("m1", (IncidentState.PENDING,), IncidentState.RESOLVED, finished_at=NOW - 50)
        await store.create_incident(incident("c1", created=NOW - 90))  # cancelled: never ran, not counted
        await store.transition("c1", (IncidentState.PENDING,), IncidentState.CANCELLED, finished_at=NOW - 80)
        view = await store.policy_view("rag", NOW, 6 * 3600)
        assert view.auto_rollbacks_in_window == 2 and view.last_auto_rollback_end == NOW - 600
        assert view.active_incident is None

    async def test_pauses_and_holds(self, store: StateStore) -> None:
        await store.set_pause(Pause("rag", "pause", "freeze", "alice", NOW, until=NOW + 60))
        await store.set_pause(Pause("*", "pause", "global", "bob", NOW))
        await store.set_pause(Pause("rag", "hold", "incident i1 failed", "rollbackd", NOW, incident_id="i1"))
        view = await store.policy_view("rag", NOW, 3600)
        assert view.pause is not None and view.hold is not None and view.hold.incident_id == "i1"
        later = await store.policy_view("search", NOW + 120, 3600)
        assert later.pause is not None and later.pause.service == "*" and later.hold is None
        assert await store.clear_pauses("rag") == 2
        assert [p.service for p in await store.pauses()] == ["*"]

    async def test_duplicates_counted_on_the_alert(self, store: StateStore) -> None:
        a = alert()
        await store.journal_alert(a, "rag", NOW, ROLLBACK, None, decision_event())
        await store.add_duplicates({a.key: 5})
        await store.add_duplicates({a.key: 2})
        (row,) = await store.recent_alerts(None, 10)
        assert row["duplicates"] == 7

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
            await store._execute("INSERT INTO rb_events (ts, service, incident_id, kind, reason, actor, data)"
                                 " VALUES ($1,$2,$3,$4,$5,$6,$7)", NOW, "rag", None, kind, verdict, None, "{}")
        read = [(e.kind, e.verdict, e.reason) for e in await store.events(kinds=("verification", "drill"))]
        assert sorted(read) == [("drill", "GO", None), ("drill", "NO-GO", None),
                                ("verification", "fail", None), ("verification", "pass", None)]
        decision = await _one(store, decision_event())
        assert (decision.reason, decision.verdict) == ("rollback_rule", None)

    async def test_releases_and_kv(self, store: StateStore) -> None:
        r = await store.record_release(Release(service="rag", version="v1", image="app:v1", digest="sha256:ab",
                                               recorded_by="ci", live_at=NOW))
        assert r.id is not None
        green = await store.update_release(r.id, green_at=NOW + 10, green_by="alice", green_reason="ok")
        assert green.green and [x.version for x in await store.releases("rag")] == ["v1"]
        await store.set_kv("k", {"a": [1, 2]})
        assert await store.get_kv("k") == {"a": [1, 2]}
        assert await store.get_kv("missing") is None


    async def test_retention_prunes_old_unlinked_alerts_and_events_only(self, store: StateStore) -> None:
        old, young = NOW - 100 * 86400, NOW - 3600
        notify = Decision(Action.NOTIFY, Reason.NOTIFY_RULE, "rag")
        journal = [  # (alert, received_at, decision, incident): what each row is
            (alert("done"), old, notify, None), (alert("done", "resolved"), old, notify, None),  # resolved: go
            (alert("firing"), old, notify, None),  # still firing (no resolution journaled): kept
            (alert("acted"), old, ROLLBACK, incident("i-old", created=old)),  # opened an incident: kept
            (alert("young"), young, notify, None), (alert("young", "resolved"), young, notify, None),  # young
        ]
        for a, at, decision, inc in journal:
            event = Event(kind="decision", service="rag", incident_id=inc.id if inc else None, reason="r", data={},
                          ts=at)
            await store.journal_alert(a, "rag", at, decision, inc, event)
        await store.append_event(Event(kind="pause", service="rag", reason="old", data={}, ts=old))
        counts = await store.prune_journal(NOW - 90 * 86400)
        assert counts == {"alerts_firing": 1, "alerts_resolved": 1, "events": 4}  # the log lines of old alerts go
        kept = {(r["fingerprint"], r["status"]) for r in await store.recent_alerts(None, 100)}
        assert kept == {("firing", "firing"), ("acted", "firing"), ("young", "firing"), ("young", "resolved")}
        events = await store.events(limit=100)
        assert sorted((e.incident_id or "", e.ts) for e in events) == [("", young), ("", young), ("i-old", old)]
        assert await store.get_incident("i-old") is not None
        assert await store.prune_journal(NOW - 90 * 86400) == {"alerts_firing": 0, "alerts_resolved": 0,
                                                               "events": 0}


class TestSqlite(StateStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[StateStore]:
        s = SqliteStateStore(SqliteStateStore.Options(path=str(tmp_path / "state.db")))
        await s.open()
        yield s
        await s.close()


class TestPostgres(StateStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[StateStore]:
        dsn = await fresh_database("rbstate")
        s = PostgresStateStore(PostgresStateStore.Options(dsn=dsn))
        await s.open()
        yield s
        await s.close()
        await drop_database(dsn)


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
