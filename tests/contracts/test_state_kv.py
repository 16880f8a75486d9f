"""The KvStore Protocol of the state store (small named JSON values: notifier threads, the snapshot index,
the last verification and drill), on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from rollbackd.state import KvStore
from tests.contracts.state_stores import OnPostgres, OnSqlite


class KvStoreContract:
    async def test_values_round_trip_and_a_missing_key_is_none(self, store: KvStore) -> None:
        await store.set_kv("k", {"a": [1, 2]})
        assert await store.get_kv("k") == {"a": [1, 2]}
        assert await store.get_kv("missing") is None

    async def test_a_value_is_replaced_whole_and_any_json_is_kept(self, store: KvStore) -> None:
        values = [{"a": 1, "b": {"c": None}}, [1, "two", 3.5, True], "text", 42, 1.25, None]
        for value in values:
            await store.set_kv("v", value)
            assert await store.get_kv("v") == value
        await store.set_kv("x", {"first": 1})
        await store.set_kv("x", {"second": 2})
        assert await store.get_kv("x") == {"second": 2}

    async def test_a_value_is_added_only_where_none_is(self, store: KvStore) -> None:
        assert await store.add_kv("id", "first") == "first"
        assert await store.add_kv("id", "second") == "first"
        assert await store.get_kv("id") == "first"
        await store.set_kv("id", "replaced")
        assert await store.add_kv("id", "third") == "replaced"

    async def test_writers_racing_from_two_daemons_all_get_the_first_writers_value(self, store: Any) -> None:
        """Two replicas' very first start: every adder, on either connection, reads back one value."""
        other = type(store)(store.options)
        await other.open()
        try:
            got = await asyncio.gather(*(s.add_kv("race", f"v{n}") for n in range(20) for s in (store, other)))
        finally:
            await other.close()
        assert len(set(got)) == 1, got
        assert await store.get_kv("race") == got[0]


class TestSqliteKv(OnSqlite, KvStoreContract):
    pass


class TestPostgresKv(OnPostgres, KvStoreContract):
    pass


async def test_two_replicas_first_start_agree_on_one_installation_id() -> None:
    """The drill's scratch containers carry the installation id: two replicas racing to make it (their
    very first start, on one Postgres) must both label with the one id their sweeps will later take."""
    from rollbackd.drill import journal
    from rollbackd.state.postgres import PostgresStateStore
    from tests.support.pg import drop_database, fresh_database

    dsn = await fresh_database("rbinst")
    replicas = [PostgresStateStore(PostgresStateStore.Options(dsn=dsn)) for _ in range(2)]
    try:
        for replica in replicas:
            await replica.open()
        ids = await asyncio.gather(*(journal.installation(r) for r in replicas for _ in range(5)))
        assert len(set(ids)) == 1, ids
        assert await replicas[0].get_kv(journal.INSTALLATION_KEY) == ids[0]
    finally:
        for replica in replicas:
            await replica.close()
        await drop_database(dsn)
