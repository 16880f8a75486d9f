"""PostgresSnapshotter (``type: postgres``): pg_dump -Fd -j N, restore aside with pg_restore -j N, swap by
rename (rollbackd.snapshots.pgswap; or, for chosen tables, in place: rollbackd.snapshots.pginplace).

The dump runs on a snapshot exported from a REPEATABLE READ transaction, and the manifest's row counts are
read in that same snapshot, so they match the dump exactly while writers go on (pg_dump takes only
ACCESS SHARE locks). The manifest also records the database's locale (rollbackd.snapshots.pglocale), its
own properties (rollbackd.snapshots.pgprops) and the server's identity. The copy is created like the
snapshot's database, gets the snapshot's properties and a VACUUM (ANALYZE) before the swap window
(disallow connections, terminate backends, rename live to ``<db>__pre_<tag>`` and the copy to live in one
transaction, allow connections). Sessions on the live and maintenance databases are bounded and name
their blockers (rollbackd.snapshots.pgwait); a copy is dropped only after the server says it is not live.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from rollbackd.config import Duration
from rollbackd.errors import FatalError
from rollbackd.records import JSON
from rollbackd.snapshots import aside_name, pglocale, pgprops, pgwait
from rollbackd.snapshots.pgswap import RenameSwap
from rollbackd.snapshots.pgtools import Dsn, check_tool, connect, ident, run_tool

DUMP_DIR = "dump"
_TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1, 2"""


class PostgresOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dsn: SecretStr  # postgresql://user@host:port/database (with the password: from ${ENV} only)
    password: SecretStr | None = None  # overrides the DSN's; a secret key: ${ENV} or password_file
    jobs: int = Field(default=2, ge=1, le=32)
    schema_version_sql: str | None = None  # e.g. "SELECT max(version) FROM schema_version"
    in_place_tables: list[str] | None = None  # restore only these tables, in place (others are kept)
    pg_bin_dir: str | None = None
    terminate_wait: float = Field(default=10.0, gt=0)
    # every statement against the live database (and the maintenance database) waits at most this long for a
    # lock (pg_dump: --lock-wait-timeout), and runs at most statement_timeout (0: no bound)
    lock_timeout: Annotated[Duration, Field(gt=0)] = 10.0
    statement_timeout: Annotated[Duration, Field(ge=0)] = 600.0
    # snapshot: the database's own properties (settings, owner, ACL, comment, connection limit) come back as
    # recorded with the snapshot (a rollback rolls them back too); live: the live database's are kept
    properties: Literal["snapshot", "live"] = "snapshot"

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: SecretStr) -> SecretStr:
        Dsn.parse(v.get_secret_value())
        return v


class PostgresSnapshotter(RenameSwap):
    kind = "postgres"
    Options = PostgresOptions

    def __init__(self, options: PostgresOptions, *, name: str = "postgres") -> None:
        self.options = options
        self.name = name
        self.dsn = Dsn.parse(options.dsn.get_secret_value())
        if options.password is not None:
            self.dsn = dataclasses.replace(self.dsn, password=options.password.get_secret_value())
        self.database = self.dsn.database
        self.app_name = f"rollbackd-{name}-{secrets.token_hex(3)}"  # how its sessions are found (blockers)

    def bounded(self, database: str | None = None, what: str | None = None) -> AbstractAsyncContextManager[Any]:
        """A session on the live database (or another of the server) with lock and statement timeouts; a
        timeout names the sessions that blocked it."""
        return pgwait.session(
            self.dsn,
            database,
            app_name=self.app_name,
            lock_timeout=self.options.lock_timeout,
            statement_timeout=self.options.statement_timeout,
            what=what or f"{self.name}: a statement on {self.dsn.where(database)}",
        )

    def plain(self, database: str) -> AbstractAsyncContextManager[Any]:
        """A session on a copy rollbackd made (restore checks, VACUUM: no bound but the step's own)."""
        return connect(self.dsn, database)

    # ---- snapshot ---------------------------------------------------------------------------------
    async def server_major(self) -> int:
        async with self.bounded() as conn:
            return int(await conn.fetchval("SHOW server_version_num")) // 10000

    async def estimate_bytes(self) -> int:
        async with self.bounded() as conn:
            return int(await conn.fetchval("SELECT pg_database_size(current_database())"))

    async def create(self, dest: Path) -> JSON:
        started = time.monotonic()
        async with self.bounded(what=f"the snapshot of {self.dsn.where()}") as conn:
            major = int(await conn.fetchval("SHOW server_version_num")) // 10000
            pg_dump = await check_tool("pg_dump", self.options.pg_bin_dir, major)
            server_version = str(await conn.fetchval("SHOW server_version"))
            props = await pgprops.read(conn, self.database)
            locale = await pglocale.read(conn, self.database)
            server = await self._server(conn)
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot_id = str(await conn.fetchval("SELECT pg_export_snapshot()"))
                argv = [
                    pg_dump,
                    "-Fd",
                    "-j",
                    str(self.options.jobs),
                    "--snapshot",
                    snapshot_id,
                    f"--lock-wait-timeout={int(self.options.lock_timeout * 1000)}",
                    "-f",
                    str(dest / DUMP_DIR),
                    *self.dsn.argv(self.database),
                ]
                env = {**self.dsn.env(), "PGAPPNAME": self.app_name}
                dump = asyncio.create_task(run_tool(argv, env, f"pg_dump of {self.dsn.where()}"))
                try:  # counted in the dump's own snapshot while it runs: exact, and no extra wall time
                    schema_version = await self._schema_version(conn)
                    tables = await self._tables(conn)
                except BaseException:
                    dump.cancel()
                    await asyncio.gather(dump, return_exceptions=True)
                    raise
                dump_s = await dump
        return {
            "kind": self.kind,
            "store": self.name,
            "database": self.database,
            "server": server,
            "server_version": server_version,
            "server_major": major,
            "schema_version": schema_version,
            "tables": tables,
            "database_properties": props,
            "database_locale": locale,
            "dump_format": "directory",
            "jobs": self.options.jobs,
            "bytes": sum(t["bytes"] for t in tables.values()),
            "durations": {"dump_s": round(dump_s, 3), "total_s": round(time.monotonic() - started, 3)},
        }

    async def _server(self, conn: Any) -> JSON:
        """Which server this is: its system identifier (the same for a server and its physical replicas,
        different for any other cluster) and the address it was reached at."""
        sysid = await conn.fetchval("SELECT system_identifier::text FROM pg_control_system()")
        return {"system_identifier": sysid, "address": f"{self.dsn.host}:{self.dsn.port}"}

    async def origin_problems(self, manifest: JSON) -> list[str]:
        """How the snapshot's origin differs from this store (another database, another server)."""
        problems = []
        if manifest.get("database") not in (None, self.database):
            problems.append(f"database {manifest['database']} (this store's is {self.database})")
        then = (manifest.get("server") or {}).get("system_identifier")
        if then is not None:
            async with self.bounded() as conn:
                now = (await self._server(conn))["system_identifier"]
            if now != then:
                problems.append(
                    f"PostgreSQL server {then} at {manifest['server'].get('address')} (this store's "
                    f"is {now} at {self.dsn.host}:{self.dsn.port})"
                )
        return problems

    async def _schema_version(self, conn: Any) -> str | None:
        if not self.options.schema_version_sql:
            return None
        value = await conn.fetchval(self.options.schema_version_sql)
        return None if value is None else str(value)

    async def _tables(self, conn: Any) -> dict[str, JSON]:
        out: dict[str, JSON] = {}
        for row in await conn.fetch(_TABLES_SQL):
            rows = await conn.fetchval(f"SELECT count(*) FROM {ident(row['schema'])}.{ident(row['name'])}")
            out[f"{row['schema']}.{row['name']}"] = {"rows": int(rows), "bytes": int(row["bytes"])}
        return out

    # ---- restore aside ----------------------------------------------------------------------------
    async def _fresh_name(self, admin: Any, set_id: str) -> str:
        """A restore-aside name no database has on the server now (never a live or kept copy's)."""
        for _ in range(32):
            name = aside_name(self.database, set_id)
            if len(name.encode()) > 63:
                raise FatalError(
                    f"database name {name!r} is longer than PostgreSQL's 63 bytes; shorten the "
                    "database name or use in_place_tables"
                )
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                return name
        raise FatalError(f"no free restore-aside database name for set {set_id}")

    async def prepare(self, manifest: JSON, src: Path, set_id: str) -> JSON:
        started = time.monotonic()
        async with self.bounded("postgres") as admin:
            major = int(await admin.fetchval("SHOW server_version_num")) // 10000
            pg_restore = await check_tool("pg_restore", self.options.pg_bin_dir, major)
            await self._check_server_disk(admin, int(manifest.get("bytes", 0)))
            target = await self._fresh_name(admin, set_id)
            # an older manifest has no locale: the live database's is the best guess left
            locale = manifest.get("database_locale") or await pglocale.read(admin, self.database)
            await pglocale.create(admin, target, locale, major)
        try:
            restore_s, counts = await self._restore(pg_restore, src / DUMP_DIR, target, manifest)
            properties = await self._snapshot_properties(target, manifest)
            vacuum_s = await self._vacuum_analyze(target)
        except BaseException:
            await self.discard({"database": target})
            raise
        return {
            "kind": self.kind,
            "database": target,
            "live": self.database,
            "set_id": set_id,
            "mode": "in_place" if self.options.in_place_tables else "rename",
            "locale": locale,
            "expected": {"tables": {k: {"rows": v["rows"]} for k, v in manifest["tables"].items()}},
            "counts_checked": counts,
            **properties,
            "durations": {
                "restore_s": round(restore_s, 3),
                "vacuum_analyze_s": round(vacuum_s, 3),
                "total_s": round(time.monotonic() - started, 3),
            },
        }

    async def _snapshot_properties(self, target: str, manifest: JSON) -> JSON:
        """The snapshot's database properties onto the copy, off the downtime path (``properties: snapshot``,
        rename mode, a manifest that recorded them); else they are taken from the live database at the swap."""
        props = manifest.get("database_properties")
        if self.options.properties != "snapshot" or self.options.in_place_tables or not props:
            return {"properties_from": "live"}
        async with self.plain(target) as conn:
            applied = await pgprops.apply(conn, target, props)
        return {"properties_from": "snapshot", "properties_applied": applied}

    async def _restore(self, pg_restore: str, dump: Path, target: str, manifest: JSON) -> tuple[float, JSON]:
        started = time.monotonic()
        argv = [pg_restore, "-j", str(self.options.jobs), "--exit-on-error", *self.dsn.argv(target), str(dump)]
        await run_tool(argv, self.dsn.env(), f"pg_restore into {self.dsn.where(target)}")
        return time.monotonic() - started, await self._check_counts(target, manifest)

    async def _vacuum_analyze(self, database: str) -> float:
        """A restored database has no planner statistics and no visibility map: without them the first minutes
        are slow (index-only scans fetch every heap page). Runs in prepare, off the downtime path."""
        started = time.monotonic()
        async with self.plain(database) as conn:
            await conn.execute("VACUUM (ANALYZE)")
        return time.monotonic() - started

    async def _check_counts(self, database: str, manifest: JSON) -> JSON:
        """Rows per table against the manifest. A database that only pg_restore wrote to has, per table,
        inserted-minus-deleted rows equal to its row count in the server's statistics (flushed as the
        restore's sessions end): checked first, without a scan. Anything else falls back to count(*)."""
        expected = {t: int(m["rows"]) for t, m in manifest["tables"].items()}
        async with self.plain(database) as conn:
            previous: dict[str, int] | None = None
            stable = 0
            for _ in range(40):
                rows = await conn.fetch(
                    "SELECT schemaname || '.' || relname AS t, n_tup_ins - n_tup_del AS n FROM pg_stat_user_tables"
                )
                seen = {r["t"]: int(r["n"]) for r in rows}
                if all(seen.get(t) == n for t, n in expected.items()):
                    return {"tables": len(expected), "by": "statistics"}
                stable = stable + 1 if seen == previous else 0
                if stable >= 4:
                    break  # settled and different (e.g. partitioned tables): count for real
                previous = seen
                await asyncio.sleep(0.025)
            actual = await self._tables(conn)
        wrong = [
            f"{t}: {actual.get(t, {}).get('rows')} rows, manifest {n}"
            for t, n in expected.items()
            if actual.get(t, {}).get("rows") != n
        ]
        if wrong:
            raise FatalError("restored copy does not match the snapshot manifest: " + "; ".join(wrong[:5]))
        return {"tables": len(expected), "by": "count(*)"}

    async def _check_server_disk(self, admin: Any, needed: int) -> None:
        """When the server is on this machine, its data directory needs room for the copy."""
        if self.dsn.host not in ("127.0.0.1", "localhost", "::1") and not self.dsn.host.startswith("/"):
            return
        try:
            data_dir = str(await admin.fetchval("SHOW data_directory"))
            import shutil

            free = shutil.disk_usage(data_dir).free
        except Exception:  # not superuser, or another filesystem namespace: the restore will tell
            return
        if needed and free < needed * 1.1:
            raise FatalError(
                f"too little disk for the restored copy: {free} bytes free in {data_dir}, about {needed} needed"
            )

    async def is_prepared(self, restored: JSON) -> bool:
        async with self.bounded("postgres") as admin:
            return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", restored["database"]))

    async def discard(self, restored: JSON) -> None:
        async with self.bounded("postgres") as admin:
            await drop_copy(admin, self.database, restored["database"])

    async def swap(self, restored: JSON, tag: str) -> JSON:
        if restored.get("mode") == "in_place":
            from rollbackd.snapshots.pginplace import swap_in_place

            return await swap_in_place(self, restored)
        return await self.rename_swap(restored, tag)

    async def live(self) -> JSON:
        async with self.bounded() as conn:
            return {
                "kind": self.kind,
                "database": self.database,
                "tables": await self._tables(conn),
                "schema_version": await self._schema_version(conn),
                "bytes": int(await conn.fetchval("SELECT pg_database_size(current_database())")),
            }

    async def copies(self) -> list[str]:
        """Restore-aside copies that exist now (for discarding orphans; a swapped-in one was renamed)."""
        return [name for name, _ in await self._named("rb")]

    async def kept(self) -> list[JSON]:
        """Databases kept for roll-forward (``__pre_<tag>``, ``__rf_<tag>``; ``tag`` sorts by time)."""
        return [{"name": name, "tag": tag} for kind in ("pre", "rf") for name, tag in await self._named(kind)]

    async def drop_kept(self, kept: JSON) -> bool:
        await self.discard({"database": kept["name"]})
        return True

    async def _named(self, kind: str) -> list[tuple[str, str]]:
        prefix = f"{self.database}__{kind}_"
        async with self.bounded("postgres") as admin:
            pattern = prefix.replace("_", r"\_") + "%"
            return [
                (r["datname"], r["datname"][len(prefix) :])
                for r in await admin.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", pattern)
            ]

    async def close(self) -> None:
        return None


async def drop_copy(admin: Any, live: str, database: str) -> None:
    """Drop one of rollbackd's copies of ``live``, asking the server first: never the live database (by its
    name and by the oid of the database that has that name now), never one that is not ``<live>__...``.
    Missing is fine."""
    if database == live or not database.startswith(f"{live}__"):
        raise FatalError(f"refusing to drop database {database!r}: it is not a copy of {live!r}")
    row = await admin.fetchrow(
        "SELECT d.oid, (SELECT l.oid FROM pg_database l WHERE l.datname = $2) AS live_oid"
        " FROM pg_database d WHERE d.datname = $1",
        database,
        live,
    )
    if row is None:
        return
    if row["oid"] == row["live_oid"]:
        raise FatalError(f"refusing to drop database {database!r}: it is the live database {live!r}")
    await admin.execute(f"DROP DATABASE IF EXISTS {ident(database)} WITH (FORCE)")
