"""The copy is the snapshot's database (issue 11, point 2), on the real PostgreSQL 15 server: an ICU database
comes back ICU (same ORDER BY), a SQL_ASCII one comes back SQL_ASCII (same bytes, same regex matches), a
search_path the bad release damaged is rolled back with the data and the change is reported, the ACL keeps
its grantor chain, a server that cannot create the snapshot's database refuses before anything live changes,
and prepare leaves the copy vacuumed (visibility map set)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rollbackd.errors import FatalError
from rollbackd.snapshots.dataset import DataSet
from rollbackd.snapshots.postgres import PostgresOptions, PostgresSnapshotter
from rollbackd.snapshots.steps import describe_changes, properties_changed
from rollbackd.snapshots.store import SnapshotStore
from tests.support.pg import admin_connect, drop_database, dsn_for

pytestmark = pytest.mark.integration
WORDS = ["b", "A", "a", "B", "ä", "Z"]

Make = Callable[[str], Awaitable[str]]


@pytest.fixture
async def roles() -> AsyncIterator[dict[str, str]]:
    suffix = secrets.token_hex(3)
    names = {"owner": f"va_owner_{suffix}", "app": f"va_app_{suffix}", "reader": f"va_reader_{suffix}"}
    conn = await admin_connect()
    try:
        for name in names.values():
            await conn.execute(f"CREATE ROLE {name} LOGIN")
        yield names
    finally:
        for name in names.values():
            await conn.execute(f"DROP ROLE IF EXISTS {name}")
        await conn.close()


@pytest.fixture
async def make_db(roles: dict[str, str]) -> AsyncIterator[Make]:
    """``await make_db("LOCALE_PROVIDER icu ...")``: a fresh database created with those options; dropped
    (with its rollback copies) after the test, before the roles."""
    made: list[str] = []

    async def make(options: str) -> str:
        name = f"rbt_ident_{secrets.token_hex(4)}"
        conn = await admin_connect()
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 {options}')
        finally:
            await conn.close()
        made.append(name)
        return dsn_for(name)

    yield make
    for name in made:
        await drop_database(name)


def dataset(tmp_path: Path, dsn: str, **options: Any) -> DataSet:
    snap = PostgresSnapshotter(PostgresOptions(dsn=dsn, **options))  # type: ignore[arg-type]
    return DataSet(service="rag", store=SnapshotStore(tmp_path / "store", "rag"), snapshotters={"postgres": snap})


async def run(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        if ";" in sql:  # a script: the simple query protocol
            return await conn.execute(sql)
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def locale_of(name: str) -> dict[str, Any]:
    conn = await admin_connect()
    try:
        row = await conn.fetchrow(
            "SELECT pg_encoding_to_char(encoding) AS encoding, datcollate, datctype, "
            "datlocprovider, daticulocale FROM pg_database WHERE datname = $1",
            name,
        )
        return dict(row) if row else {}
    finally:
        await conn.close()


async def test_an_icu_database_comes_back_icu(make_db: Make, tmp_path: Path) -> None:
    conn = await admin_connect()
    try:  # the server must have ICU (PostgreSQL 15 built with it): fail loudly, never skip
        assert await conn.fetchval("SELECT count(*) FROM pg_collation WHERE collprovider = 'i'") > 0
    finally:
        await conn.close()
    dsn = await make_db(
        "ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    )
    await run(dsn, "CREATE TABLE words (w text)")
    await run(dsn, "INSERT INTO words SELECT unnest($1::text[])", WORDS)
    ordered = [r["w"] for r in await run(dsn, "SELECT w FROM words ORDER BY w")]
    assert ordered != sorted(WORDS)  # ICU order, not byte order
    live_name = dsn.rpartition("/")[2]
    before = await locale_of(live_name)
    data = dataset(tmp_path, dsn)
    snap = await data.create(reason="green")
    assert snap.manifests["postgres"]["database_locale"]["icu_locale"] == "en-US"
    assert snap.manifests["postgres"]["database_locale"]["locale_provider"] == "icu"
    await run(dsn, "INSERT INTO words VALUES ('junk')")
    await data.swap(await data.prepare(snap.id), "20261122-031502-a1b2")
    assert await locale_of(live_name) == before
    assert [r["w"] for r in await run(dsn, "SELECT w FROM words ORDER BY w")] == ordered


async def test_a_sql_ascii_database_comes_back_sql_ascii(make_db: Make, tmp_path: Path) -> None:
    dsn = await make_db("ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'")
    # latin-1 bytes in a SQL_ASCII database (the server never checks them), as an old application wrote them
    await run(dsn, r"CREATE TABLE t (v text); INSERT INTO t VALUES (E'caf\xe9'), (E'r\xe9sum\xe9'), ('plain')")
    query = "SELECT count(*) AS n FROM t WHERE v ~ '^(caf.|r.sum.)$' AND upper(v) IS NOT NULL"
    assert (await run(dsn, query))[0]["n"] == 2
    data = dataset(tmp_path, dsn)
    snap = await data.create(reason="green")
    await run(dsn, "DELETE FROM t WHERE v = 'plain'")
    prepared = await data.prepare(snap.id)
    assert (await locale_of(prepared["postgres"]["database"]))["encoding"] == "SQL_ASCII"
    await data.swap(prepared, "20261122-031502-a1b2")
    assert (await locale_of(dsn.rpartition("/")[2]))["encoding"] == "SQL_ASCII"
    assert (await run(dsn, query))[0]["n"] == 2 and (await run(dsn, "SELECT count(*) AS n FROM t"))[0]["n"] == 3


async def damaged(make_db: Make, roles: dict[str, str]) -> str:
    """A database whose app reads unqualified names through ``search_path = app, public``; CONNECT granted
    owner -> app (with grant option) -> reader."""
    dsn = await make_db(f"OWNER {roles['owner']}")
    name = dsn.rpartition("/")[2]
    await run(
        dsn,
        f"""
        CREATE SCHEMA app; CREATE TABLE app.docs (id int PRIMARY KEY, body text);
        INSERT INTO app.docs SELECT g, 'doc ' || g FROM generate_series(1, 50) g;
        ALTER DATABASE {name} SET search_path = app, public; COMMENT ON DATABASE {name} IS 'corpus';
        REVOKE ALL ON DATABASE {name} FROM PUBLIC;
        GRANT CONNECT ON DATABASE {name} TO {roles["app"]} WITH GRANT OPTION;
        SET ROLE {roles["app"]}; GRANT CONNECT ON DATABASE {name} TO {roles["reader"]}; RESET ROLE;""",
    )
    return dsn


async def acl_of(name: str) -> list[str]:
    conn = await admin_connect()
    try:
        return sorted(await conn.fetchval("SELECT datacl::text[] FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def test_a_damaged_search_path_is_rolled_back_and_reported(
    make_db: Make, roles: dict[str, str], tmp_path: Path
) -> None:
    dsn = await damaged(make_db, roles)
    name = dsn.rpartition("/")[2]
    acl = await acl_of(name)
    assert f"{roles['reader']}=c/{roles['app']}" in acl
    data = dataset(tmp_path, dsn)
    snap = await data.create(reason="green")
    # the bad release: a migration that damages the search_path and the comment
    await run(dsn, f"ALTER DATABASE {name} SET search_path = public; COMMENT ON DATABASE {name} IS 'v2'")
    with pytest.raises(asyncpg.UndefinedTableError):
        await run(dsn, "SELECT count(*) FROM docs")
    prepared = await data.prepare(snap.id)
    assert prepared["postgres"]["properties_from"] == "snapshot"
    swapped = await data.swap(prepared, "20261122-031502-a1b2")
    assert (await run(dsn, "SELECT count(*) AS n FROM docs"))[0]["n"] == 50  # unqualified: works again
    assert await acl_of(name) == acl  # the grantor chain is kept: reader=c/app, not reader=c/owner
    changed = properties_changed(swapped)["postgres"]
    assert changed["settings"] == {"live": ["search_path=public"], "snapshot": ["search_path=app, public"]}
    assert changed["comment"] == {"live": "v2", "snapshot": "corpus"}
    text = describe_changes(properties_changed(swapped))
    assert "postgres settings ['search_path=public'] -> ['search_path=app, public']" in text


async def test_properties_live_keeps_the_live_ones(make_db: Make, roles: dict[str, str], tmp_path: Path) -> None:
    dsn = await damaged(make_db, roles)
    name = dsn.rpartition("/")[2]
    data = dataset(tmp_path, dsn, properties="live")
    snap = await data.create(reason="green")
    await run(dsn, f"ALTER DATABASE {name} SET search_path = app, public, extra")
    swapped = await data.swap(await data.prepare(snap.id), "20261122-031502-a1b2")
    assert swapped["postgres"]["properties_from"] == "live" and swapped["postgres"]["properties_changed"] == {}
    assert (await run(dsn, "SHOW search_path"))[0]["search_path"] == "app, public, extra"


async def test_a_server_that_cannot_create_the_snapshots_database_refuses_first(make_db: Make, tmp_path: Path) -> None:
    dsn = await make_db("")
    await run(dsn, "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 10)")
    data = dataset(tmp_path, dsn)
    snap = await data.create(reason="green")
    assert snap.path is not None
    manifest_path = snap.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["stores"]["postgres"]["database_locale"]["lc_collate"] = "xx_XX.UTF-8"  # not on this server
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(FatalError, match=r"cannot create a database like the snapshot's .*nothing live changed"):
        await data.prepare(snap.id)
    assert await data.snapshotters["postgres"].copies() == []  # type: ignore[attr-defined]
    assert (await run(dsn, "SELECT count(*) AS n FROM t"))[0]["n"] == 10


async def test_prepare_vacuums_the_copy(make_db: Make, tmp_path: Path) -> None:
    dsn = await make_db("")
    await run(dsn, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 20000)")
    data = dataset(tmp_path, dsn)
    snap = await data.create(reason="green")
    prepared = await data.prepare(snap.id)
    assert prepared["postgres"]["durations"]["vacuum_analyze_s"] >= 0
    copy = dsn_for(prepared["postgres"]["database"])
    row = (await run(copy, "SELECT relpages, relallvisible FROM pg_class WHERE relname = 't'"))[0]
    assert row["relpages"] > 0 and row["relallvisible"] == row["relpages"]  # index-only scans skip the heap


async def test_the_incident_step_reports_the_properties_it_changed(
    make_db: Make, roles: dict[str, str], tmp_path: Path
) -> None:
    """The data.swap step's summary (what `show` and the Slack thread print) lists live -> snapshot."""
    from rollbackd.snapshots.steps import PrepareData, SwapData
    from tests.integration.test_data_steps import make_ctx, step

    dsn = await damaged(make_db, roles)
    name = dsn.rpartition("/")[2]
    data = dataset(tmp_path, dsn)
    snap = await data.create(reason="green")
    await run(dsn, f"ALTER DATABASE {name} SET search_path = public")
    ctx = make_ctx(data, {"target": {"snapshot_set": snap.id}}, track=True)
    await step(PrepareData).run(ctx)
    out = await step(SwapData).run(ctx)
    assert out["properties_changed"]["postgres"]["settings"]["snapshot"] == ["search_path=app, public"]
    assert (
        "database properties changed (live -> snapshot): postgres settings ['search_path=public'] -> "
        "['search_path=app, public']"
    ) in out["summary"]
