"""PostgresSnapshotter against the real PostgreSQL 15 server: a fresh database per test (tests/support/pg.py).

Shown here: writers are not blocked by the dump; a client reconnecting in a loop sees only the swap window
(printed); the app role's search_path, privileges and settings are the same after the swap (the DESIGN
trap); ANALYZE ran; the rename swap is refused for a database with a subscription; a corrupt snapshot is
refused with the live data untouched; in-place mode keeps the other tables; clear errors.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rollbackd.errors import BackendError, FatalError
from rollbackd.snapshots import pgprops
from rollbackd.snapshots.dataset import DataSet
from rollbackd.snapshots.postgres import PostgresOptions, PostgresSnapshotter
from rollbackd.snapshots.store import SnapshotStore
from tests.support.corpus import change_corpus, create_corpus, table_counts
from tests.support.pg import admin_connect, database_exists, db_name, dsn_for

pytestmark = pytest.mark.integration
SCHEMA_SQL = "SELECT max(version) FROM schema_version"


def snapshotter(dsn: str, **options: Any) -> PostgresSnapshotter:
    return PostgresSnapshotter(PostgresOptions(dsn=dsn, schema_version_sql=options.pop("sql", SCHEMA_SQL), **options))


def dataset(tmp_path: Path, snap: PostgresSnapshotter) -> DataSet:
    return DataSet(service="rag", store=SnapshotStore(tmp_path / "store", "rag"), snapshotters={"postgres": snap})


async def leftovers(dsn: str) -> list[str]:
    conn = await admin_connect()
    try:
        pattern = db_name(dsn).replace("_", r"\_") + r"\_\_rb\_%"
        return [
            r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", pattern)
        ]
    finally:
        await conn.close()


@pytest.fixture
async def roles() -> AsyncIterator[dict[str, str]]:
    """Cluster-wide roles for a test; dropped after the test's databases (set up first, torn down last)."""
    suffix = secrets.token_hex(3)
    names = {"app": f"rbt_app_{suffix}", "outsider": f"rbt_out_{suffix}"}
    conn = await admin_connect()
    try:
        for name in names.values():
            await conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'app-password'")
        yield names
    finally:
        for name in names.values():
            await conn.execute(f"DROP ROLE IF EXISTS {name}")
        await conn.close()


@pytest.fixture
async def corpus_dsn(roles: dict[str, str], pg_dsn: str) -> str:
    await create_corpus(pg_dsn, docs=400)
    return pg_dsn


async def test_snapshot_does_not_block_writers_and_counts_match_the_dump(corpus_dsn: str, tmp_path: Path) -> None:
    data = dataset(tmp_path, snapshotter(corpus_dsn))
    commits: list[float] = []
    stop = asyncio.Event()

    async def writer() -> None:
        conn = await asyncpg.connect(corpus_dsn)
        try:
            while not stop.is_set():
                await conn.execute("INSERT INTO conversations (question, answer) VALUES ('q', 'a')")
                commits.append(time.monotonic())
        finally:
            await conn.close()

    task = asyncio.create_task(writer())
    while not commits:
        await asyncio.sleep(0.001)
    started = time.monotonic()
    snap = await data.create(reason="test")
    ended = time.monotonic()
    stop.set()
    await task
    during = [t for t in commits if started < t < ended]
    print(f"writer committed {len(during)} inserts while the snapshot ran ({ended - started:.2f}s)")
    assert during, "the writer was blocked by the snapshot"
    manifest = snap.manifests["postgres"]
    assert manifest["schema_version"] == "1" and manifest["server_major"] == 15
    assert manifest["tables"]["public.docs"]["rows"] == 400 and manifest["tables"]["public.docs"]["bytes"] > 0
    final = (await table_counts(corpus_dsn))["conversations"]
    assert 25 <= manifest["tables"]["public.conversations"]["rows"] < final
    prepared = await data.prepare(snap.id)  # the restored copy matches the counts taken in the dump's snapshot
    assert prepared["postgres"]["counts_checked"] == {"tables": 4, "by": "statistics"}
    await data.discard(prepared)
    assert await leftovers(corpus_dsn) == []
    manifest = {**manifest, "tables": {**manifest["tables"], "public.docs": {"rows": 399, "bytes": 1}}}
    assert snap.path is not None
    with pytest.raises(FatalError, match=r"public\.docs: 400 rows, manifest 399"):  # falls back to count(*)
        await data.snapshotters["postgres"].prepare(manifest, snap.path / "postgres", "mismatch")
    assert await leftovers(corpus_dsn) == []


async def test_swap_window_seen_by_a_reconnecting_client(corpus_dsn: str, tmp_path: Path) -> None:
    data = dataset(tmp_path, snapshotter(corpus_dsn))
    snap = await data.create(reason="before the bad deploy")
    await change_corpus(corpus_dsn)  # docs 400 -> 430
    prepared = await data.prepare(snap.id)
    seen: list[tuple[float, int | None]] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            try:
                conn = await asyncpg.connect(corpus_dsn, timeout=5)
                try:
                    seen.append((time.monotonic(), int(await conn.fetchval("SELECT count(*) FROM docs"))))
                finally:
                    await conn.close()
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                seen.append((time.monotonic(), None))
                await asyncio.sleep(0.001)

    task = asyncio.create_task(client())
    while len(seen) < 5:
        await asyncio.sleep(0.005)
    swapped = await data.swap(prepared, "20261122-031502-a1b2")
    while not seen or seen[-1][1] != 400:
        await asyncio.sleep(0.005)
    stop.set()
    await task
    last_old = max(t for t, c in seen if c == 430)
    first_new = min(t for t, c in seen if c == 400)
    failures = sum(1 for _, c in seen if c is None)
    print(
        f"swap: rollbackd measured {swapped['postgres']['downtime_s'] * 1000:.1f} ms; the reconnecting client saw "
        f"{(first_new - last_old) * 1000:.1f} ms between old and new data ({failures} failed attempts)"
    )
    assert last_old < first_new
    assert all(c == 400 for t, c in seen if t > first_new)  # never back to the old data
    kept = swapped["postgres"]["kept"]
    assert kept.endswith("__pre_20261122_031502_a1b2") and await database_exists(kept)
    assert (await table_counts(dsn_for(kept)))["docs"] == 430  # the replaced data is kept for roll-forward
    conn = await asyncpg.connect(corpus_dsn)
    try:  # ANALYZE ran on the restored copy before the swap
        assert await conn.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = 'docs'") > 0
    finally:
        await conn.close()
    forward = await data.roll_forward(swapped, "20261122-040000-ffff")
    assert (await table_counts(corpus_dsn))["docs"] == 430
    assert forward["postgres"]["kept"].endswith("__rf_20261122_040000_ffff")
    assert (await data.roll_forward(swapped, "20261122-040000-ffff"))["postgres"] == {"found_done": True}


async def _observe(dsn: str, roles: dict[str, str]) -> dict[str, Any]:
    """What the app role sees, and the database's own properties."""
    app = await asyncpg.connect(dsn.replace("postgres@", f"{roles['app']}:app-password@"))
    try:
        seen = {
            "search_path": await app.fetchval("SHOW search_path"),
            "work_mem": await app.fetchval("SHOW work_mem"),
            "docs": await app.fetchval("SELECT count(*) FROM docs"),
            "insert": await app.fetchval("SELECT has_table_privilege('app.docs', 'INSERT')"),
            "select": await app.fetchval("SELECT has_table_privilege('app.docs', 'SELECT')"),
        }
    finally:
        await app.close()
    try:
        await asyncpg.connect(dsn.replace("postgres@", f"{roles['outsider']}:app-password@"))
        seen["outsider"] = "connected"
    except asyncpg.InsufficientPrivilegeError:
        seen["outsider"] = "refused"
    admin = await admin_connect()
    try:
        props = await pgprops.read(admin, db_name(dsn))
    finally:
        await admin.close()
    seen["acl"] = sorted(a.replace(roles["app"], "APP") for a in props["acl"])
    seen.update({k: props[k] for k in ("owner", "connection_limit", "comment", "settings")})
    return seen


async def test_app_role_sees_the_same_database_after_the_swap(
    roles: dict[str, str], pg_dsn: str, tmp_path: Path
) -> None:
    app, name = roles["app"], db_name(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"""
            CREATE SCHEMA app; CREATE TABLE app.docs (id int PRIMARY KEY, body text);
            INSERT INTO app.docs SELECT g, 'doc ' || g FROM generate_series(1, 50) g;
            CREATE TABLE schema_version (version int); INSERT INTO schema_version VALUES (3);
            GRANT USAGE ON SCHEMA app TO {app}; GRANT SELECT ON app.docs TO {app};
            ALTER DATABASE {name} SET search_path = app, public;
            ALTER ROLE {app} IN DATABASE {name} SET work_mem = '7MB';
            REVOKE CONNECT, TEMPORARY ON DATABASE {name} FROM PUBLIC; GRANT CONNECT ON DATABASE {name} TO {app};
            COMMENT ON DATABASE {name} IS 'RAG corpus'; ALTER DATABASE {name} CONNECTION LIMIT 40;""")
    finally:
        await conn.close()
    before = await _observe(pg_dsn, roles)
    assert before["search_path"] == "app, public" and before["work_mem"] == "7MB" and before["outsider"] == "refused"
    data = dataset(tmp_path, snapshotter(pg_dsn))
    snap = await data.create(reason="t")
    assert snap.manifests["postgres"]["database_properties"]["comment"] == "RAG corpus"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("INSERT INTO app.docs SELECT g, 'junk' FROM generate_series(51, 60) g")
    finally:
        await conn.close()
    swapped = await data.swap(await data.prepare(snap.id), "inc-props")
    assert swapped["postgres"]["properties_applied"]["statements"] > 5
    after = await _observe(pg_dsn, roles)
    assert before.pop("docs") == 50 and after.pop("docs") == 50
    assert after == before


async def test_rename_swap_refused_with_a_subscription(corpus_dsn: str, tmp_path: Path) -> None:
    admin = await admin_connect()
    try:  # a logical slot needs wal_level=logical; this server runs `replica`, so a subscription shows the check
        level = await admin.fetchval("SHOW wal_level")
        print(f"wal_level={level}: logical slots {'can' if level == 'logical' else 'cannot'} be made here")
    finally:
        await admin.close()
    data = dataset(tmp_path, snapshotter(corpus_dsn))
    snap = await data.create(reason="t")
    prepared = await data.prepare(snap.id)
    await change_corpus(corpus_dsn)
    conn = await asyncpg.connect(corpus_dsn)
    try:
        await conn.execute(
            "CREATE SUBSCRIPTION rbt_sub CONNECTION 'host=127.0.0.1 dbname=postgres' "
            "PUBLICATION nothing WITH (connect = false)"
        )
        with pytest.raises(FatalError, match=r"refusing the rename swap .* subscription\(s\) rbt_sub"):
            await data.swap(prepared, "inc-sub")
        assert (await table_counts(corpus_dsn))["docs"] == 430  # live untouched
    finally:
        await conn.execute("ALTER SUBSCRIPTION rbt_sub SET (slot_name = NONE)")
        await conn.execute("DROP SUBSCRIPTION rbt_sub")
        await conn.close()


async def test_slot_check_reports_logical_slots() -> None:
    class Conn:  # the server here cannot hold a logical slot (wal_level=replica): the query's answer is simulated
        async def fetch(self, sql: str, *args: Any) -> list[dict[str, str]]:
            return [{"slot_name": "rag_cdc"}] if "pg_replication_slots" in sql else []

    assert await pgprops.swap_blockers(Conn(), "rag") == ["logical replication slot(s) rag_cdc"]


async def test_corrupt_snapshot_refused_live_untouched(corpus_dsn: str, tmp_path: Path) -> None:
    data = dataset(tmp_path, snapshotter(corpus_dsn))
    snap = await data.create(reason="t")
    await change_corpus(corpus_dsn)
    assert snap.path is not None
    victim = max((snap.path / "postgres" / "dump").iterdir(), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(FatalError, match=r"failed verification .*sha256 mismatch"):
        await data.prepare(snap.id)
    assert (await table_counts(corpus_dsn))["docs"] == 430
    assert await leftovers(corpus_dsn) == []
    assert not (await data.get(snap.id)).verified
    assert await data.latest(verified_only=True) is None


async def test_in_place_mode_keeps_the_other_tables(corpus_dsn: str, tmp_path: Path) -> None:
    data = dataset(tmp_path, snapshotter(corpus_dsn, in_place_tables=["public.docs", "chunks"]))
    snap = await data.create(reason="t")
    await change_corpus(corpus_dsn)
    conn = await asyncpg.connect(corpus_dsn)
    try:
        await conn.execute("INSERT INTO conversations (question, answer) VALUES ('kept?', 'yes')")
    finally:
        await conn.close()
    prepared = await data.prepare(snap.id)
    assert prepared["postgres"]["mode"] == "in_place"
    swapped = await data.swap(prepared, "inc-inplace")
    print(f"in-place swap locked the corpus tables for {swapped['postgres']['downtime_s'] * 1000:.1f} ms")
    counts = await table_counts(corpus_dsn)
    assert counts["docs"] == 400 and counts["chunks"] == 400 and counts["conversations"] == 26
    assert await data.snapshotters["postgres"].is_swapped(prepared["postgres"], "inc-inplace")  # for resume
    assert await leftovers(corpus_dsn) == []
    conn = await asyncpg.connect(corpus_dsn)
    try:
        assert await conn.fetchval("SELECT max(id) FROM chunks") == await conn.fetchval(
            "SELECT last_value FROM chunks_id_seq"
        )
    finally:
        await conn.close()


async def test_clear_errors(
    corpus_dsn: str, roles: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = snapshotter("postgresql://postgres@127.0.0.1:9/rag")
    with pytest.raises(BackendError, match=r"127.0.0.1:9/rag: connection refused") as info:
        await refused.create(tmp_path / "a")
    assert info.value.retryable
    with pytest.raises(FatalError, match="pg_dump not found in /nonexistent"):
        await snapshotter(corpus_dsn, pg_bin_dir="/nonexistent").create(tmp_path / "b")
    old = tmp_path / "oldbin"
    old.mkdir()
    (old / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.4'\n")
    (old / "pg_dump").chmod(0o755)
    with pytest.raises(FatalError, match="pg_dump is version 12 but the server is version 15"):
        await snapshotter(corpus_dsn, pg_bin_dir=str(old)).create(tmp_path / "c")
    admin = await admin_connect()
    try:
        await admin.execute(f"REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM {roles['outsider']}")
    finally:
        await admin.close()
    outsider = corpus_dsn.replace("postgres@", f"{roles['outsider']}:app-password@")
    with pytest.raises(FatalError, match="permission denied"):
        await snapshotter(outsider).create(tmp_path / "d")
    data = dataset(tmp_path, snapshotter(corpus_dsn))
    monkeypatch.setattr(data.store, "free_bytes", lambda: 1000)
    with pytest.raises(FatalError, match="too little disk"):
        await data.create(reason="t")
    assert await data.list() == []
