"""The ControlStore Protocol of the state store (pauses, holds, the policy's view), on SQLite and PostgreSQL."""

from __future__ import annotations

from rollbackd.reasons import IncidentState
from rollbackd.records import Pause
from rollbackd.state import StateStore
from tests.contracts.state_stores import NOW, OnPostgres, OnSqlite, incident


class ControlStoreContract:
    """Pauses and holds, and the budget and cooldown the policy reads."""

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


class TestSqliteControls(OnSqlite, ControlStoreContract):
    pass


class TestPostgresControls(OnPostgres, ControlStoreContract):
    pass
