"""The ReplicaView Protocol of the state store (who leads, every replica's heartbeat, the store's clock),
on SQLite and on the real PostgreSQL. A store nobody leads yet answers with no leader and no replicas."""

from __future__ import annotations

import time

from rollbackd.state import ReplicaView
from tests.contracts.state_stores import OnPostgres, OnSqlite


class ReplicaViewContract:
    async def test_a_store_nobody_leads_has_no_leader_and_the_store_clock(self, store: ReplicaView) -> None:
        view = await store.replicas()
        assert view["leader"] is None and list(view["replicas"]) == []
        assert abs(float(view["now"]) - time.time()) < 60  # the store's clock, in epoch seconds


class TestSqliteReplicas(OnSqlite, ReplicaViewContract):
    pass


class TestPostgresReplicas(OnPostgres, ReplicaViewContract):
    pass
