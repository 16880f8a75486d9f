"""The rename swap of the Postgres backend (a mixin of PostgresSnapshotter): the checks that refuse it, the
window (connections disallowed, backends ended, both renames in one transaction), roll-forward (the same
rename the other way). Every statement runs on a bounded admin session (lock_timeout, statement_timeout)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from rollbackd.errors import FatalError
from rollbackd.records import JSON
from rollbackd.snapshots import pgprops, pre_name, rollforward_name
from rollbackd.snapshots.pgtools import ident
from rollbackd.snapshots.pgwait import describe

if TYPE_CHECKING:
    from rollbackd.snapshots.postgres import PostgresOptions


class RenameSwap:
    kind: str
    database: str
    options: PostgresOptions

    def bounded(self, database: str | None = None, what: str | None = None) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    def plain(self, database: str) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def check_swap(self, restored: JSON, tag: str = "") -> None:
        async with self.bounded("postgres") as admin:
            if restored.get("mode") == "in_place":
                if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", restored["database"]):
                    raise FatalError(f"the restored copy {restored['database']} is gone")
                return
            await self._rename_checks(admin, tag)
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", restored["database"]):
                raise FatalError(f"the restored copy {restored['database']} is gone")

    async def _rename_checks(self, admin: Any, tag: str) -> None:
        for name in (pre_name(self.database, tag), rollforward_name(self.database, tag)):
            if len(name.encode()) > 63:  # PostgreSQL would silently truncate it: refuse before acting
                raise FatalError(f"database name {name!r} is longer than PostgreSQL's 63 bytes")
        blockers = await pgprops.swap_blockers(admin, self.database)
        if blockers:
            raise FatalError(
                f"refusing the rename swap of {self.database}: it has "
                + "; ".join(blockers)
                + " (they stay with the old database); use "
                "`in_place_tables` for this database"
            )

    async def preflight(self, manifest: JSON, tag: str) -> None:
        """What would refuse the swap of this snapshot, checked before anything is written."""
        if self.options.in_place_tables:
            return
        async with self.bounded("postgres") as admin:
            await self._rename_checks(admin, tag)

    async def rename_swap(self, restored: JSON, tag: str) -> JSON:
        await self.check_swap(restored, tag)
        kept, copy = pre_name(self.database, tag), restored["database"]
        async with self.bounded("postgres", what=f"the swap of {self.database}") as admin:
            live = await pgprops.read(admin, self.database)
            applied = restored.get("properties_applied")
            if restored.get("properties_from") != "snapshot":
                async with self.plain(copy) as conn:  # settings apply to the copy even while connected
                    applied = await pgprops.apply(conn, copy, live)
            changed = pgprops.changes(live, await pgprops.read(admin, copy))
            downtime = await self._rename(admin, self.database, kept, copy)
        return {
            "kind": self.kind,
            "mode": "rename",
            "live": self.database,
            "kept": kept,
            "restored": copy,
            "properties_from": restored.get("properties_from", "live"),
            "properties_applied": applied,
            "properties_changed": changed,
            "downtime_s": round(downtime, 4),
        }

    async def _rename(self, admin: Any, live: str, kept: str, incoming: str) -> float:
        """The window: no connections, backends ended, the two renames in one transaction."""
        started = time.monotonic()
        await admin.execute(f"ALTER DATABASE {ident(live)} WITH ALLOW_CONNECTIONS false")
        try:
            await self._terminate(admin, (live, incoming))
            async with admin.transaction():
                await admin.execute(f"ALTER DATABASE {ident(live)} RENAME TO {ident(kept)}")
                await admin.execute(f"ALTER DATABASE {ident(incoming)} RENAME TO {ident(live)}")
                await admin.execute(f"ALTER DATABASE {ident(live)} WITH ALLOW_CONNECTIONS true")
        except BaseException:
            await admin.execute(f"ALTER DATABASE {ident(live)} WITH ALLOW_CONNECTIONS true")
            raise
        downtime = time.monotonic() - started
        await admin.execute(f"ALTER DATABASE {ident(kept)} WITH ALLOW_CONNECTIONS true")
        return downtime

    async def _terminate(self, admin: Any, databases: tuple[str, ...]) -> None:
        deadline = time.monotonic() + self.options.terminate_wait
        sql = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid()"
        )
        while await admin.fetchval(sql, list(databases)):
            if time.monotonic() > deadline:
                left = await admin.fetch(
                    "SELECT pid, application_name, state, left(query, 200) AS query FROM "
                    "pg_stat_activity WHERE datname = ANY($1::text[]) AND pid <> "
                    "pg_backend_pid() ORDER BY pid",
                    list(databases),
                )
                raise FatalError(
                    f"sessions of {', '.join(databases)} did not end in "
                    f"{self.options.terminate_wait:g}s: {describe([dict(r) for r in left])}"
                )
            await asyncio.sleep(0.01)

    async def is_swapped(self, restored: JSON, tag: str) -> bool:
        async with self.bounded("postgres") as admin:
            if restored.get("mode") == "in_place":  # the copy is dropped only after the tables went in
                return not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", restored["database"])
            names = {
                r["datname"]
                for r in await admin.fetch(
                    "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])",
                    [pre_name(self.database, tag), restored["database"]],
                )
            }
        return pre_name(self.database, tag) in names and restored["database"] not in names

    async def roll_forward(self, swapped: JSON, tag: str) -> JSON:
        if swapped.get("mode") != "rename":
            raise FatalError("an in-place restore keeps no pre-rollback database; restore its safety snapshot")
        kept, aside = swapped["kept"], rollforward_name(self.database, tag)
        async with self.bounded("postgres") as admin:
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", kept):
                raise FatalError(f"the pre-rollback copy {kept} is gone (pruned?)")
            downtime = await self._rename(admin, self.database, aside, kept)
        return {
            "kind": self.kind,
            "live": self.database,
            "restored": kept,
            "kept": aside,
            "downtime_s": round(downtime, 4),
        }

    async def is_rolled_forward(self, swapped: JSON, tag: str) -> bool:
        async with self.bounded("postgres") as admin:
            names = {
                r["datname"]
                for r in await admin.fetch(
                    "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])",
                    [swapped["kept"], rollforward_name(self.database, tag)],
                )
            }
        return rollforward_name(self.database, tag) in names and swapped["kept"] not in names
