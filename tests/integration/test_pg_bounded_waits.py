"""Bounded waits with names (issue 11, point 3): a session holding ACCESS EXCLUSIVE (a migration left open)
makes the snapshot and the swap fail within the lock timeout, naming the blocker's pid, application and
query; nothing live changes."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import pytest

from rollbackd.errors import FatalError
from rollbackd.snapshots.dataset import DataSet
from rollbackd.snapshots.postgres import PostgresOptions, PostgresSnapshotter
from rollbackd.snapshots.store import SnapshotStore
from tests.support.corpus import create_corpus, table_counts

pytestmark = pytest.mark.integration


def dataset(tmp_path: Path, dsn: str) -> DataSet:
    snap = PostgresSnapshotter(PostgresOptions(dsn=dsn, lock_timeout=1.0))  # type: ignore[arg-type]
    return DataSet(service="rag", store=SnapshotStore(tmp_path / "store", "rag"), snapshotters={"postgres": snap})


async def migration(dsn: str) -> tuple[asyncpg.Connection, int]:
    """A session that took ACCESS EXCLUSIVE on docs and was left open (its last query is the LOCK)."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "migrate-v2"})
    pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
    await conn.execute("BEGIN; LOCK TABLE docs IN ACCESS EXCLUSIVE MODE")
    return conn, pid


async def test_a_lock_held_by_a_migration_fails_the_snapshot_naming_it(pg_dsn: str, tmp_path: Path) -> None:
    await create_corpus(pg_dsn, docs=100)
    data = dataset(tmp_path, pg_dsn)
    blocker, pid = await migration(pg_dsn)
    try:
        started = time.monotonic()
        with pytest.raises(FatalError) as info:
            await data.create(reason="safety")
        took = time.monotonic() - started
    finally:
        await blocker.close()
    text = str(info.value)
    assert f"pid {pid}" in text and "'migrate-v2'" in text and "LOCK TABLE docs" in text, text
    assert "lock_timeout 1s" in text
    assert took < 15  # a liveness bound, not a benchmark
    assert await data.list() == []  # no half set
    assert (await table_counts(pg_dsn))["docs"] == 100


async def test_a_lock_held_during_the_in_place_swap_is_named(pg_dsn: str, tmp_path: Path) -> None:
    await create_corpus(pg_dsn, docs=100)
    snap = PostgresSnapshotter(
        PostgresOptions(
            dsn=pg_dsn,
            lock_timeout=1.0,  # type: ignore[arg-type]
            in_place_tables=["public.docs"],
        )
    )
    data = DataSet(service="rag", store=SnapshotStore(tmp_path / "store", "rag"), snapshotters={"postgres": snap})
    made = await data.create(reason="green")
    prepared = await data.prepare(made.id)
    blocker, _ = await migration(pg_dsn)
    try:
        with pytest.raises(FatalError, match=r"in-place swap waited too long .*'migrate-v2'"):
            await data.swap(prepared, "20261122-031502-a1b2")
    finally:
        await blocker.close()
