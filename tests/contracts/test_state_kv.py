"""The KvStore Protocol of the state store (small named JSON values: notifier threads, the snapshot index,
the last verification and drill), on SQLite and on the real PostgreSQL."""

from __future__ import annotations

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


class TestSqliteKv(OnSqlite, KvStoreContract):
    pass


class TestPostgresKv(OnPostgres, KvStoreContract):
    pass
