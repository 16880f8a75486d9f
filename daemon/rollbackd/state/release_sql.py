"""The release registry's queries (rb_releases and its append-only history), shared by both drivers: a part
of rollbackd.state.sql.SqlStateStore, kept apart by concern."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from rollbackd.errors import NotFoundError
from rollbackd.records import Release, now
from rollbackd.state import schema
from rollbackd.state.bulk import Statement
from rollbackd.state.bulk import marks as _marks
from rollbackd.state.versions import invalidates


class ReleaseQueries(abc.ABC):
    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def _atomic(self, statements: Sequence[Statement]) -> list[dict[str, Any]]:
        """Run statements in one transaction; return the rows of the last one."""

    @invalidates(lambda release: release.service)
    async def record_release(self, release: Release) -> Release:
        """Append a release; a ``deployed`` one supersedes the others (history appended, one transaction)."""
        values = [getattr(release, f) for f in schema.RELEASE_FIELDS]
        ts = release.live_at if release.live_at is not None else now()
        actor = release.recorded_by or "rollbackd"
        statements: list[Statement] = []
        if release.status == "deployed":
            statements += [
                (
                    "INSERT INTO rb_release_history (release_id, service, version, ts, change, actor, note)"
                    " SELECT id, service, version, CAST($2 AS DOUBLE PRECISION), 'superseded', CAST($3 AS TEXT),"
                    " CAST($4 AS TEXT) FROM rb_releases"
                    " WHERE service = $1 AND status = 'deployed'",
                    (release.service, float(ts), actor, f"superseded by {release.version}"),
                ),
                (
                    "UPDATE rb_releases SET status = 'superseded' WHERE service = $1 AND status = 'deployed'",
                    (release.service,),
                ),
            ]
        last = "(SELECT MAX(id) FROM rb_releases WHERE service = $1 AND version = $2)"
        statements += [
            (f"INSERT INTO rb_releases ({', '.join(schema.RELEASE_FIELDS)}) VALUES ({_marks(1, len(values))})", values),
            (
                "INSERT INTO rb_release_history (release_id, service, version, ts, change, actor, note)"
                " SELECT id, service, version, CAST($3 AS DOUBLE PRECISION), status,"
                " CAST($4 AS TEXT), CAST($5 AS TEXT)"
                f" FROM rb_releases WHERE id = {last}",
                (release.service, release.version, float(ts), actor, f"recorded ({release.source})"),
            ),
            (f"SELECT {schema.RELEASE_COLUMNS} FROM rb_releases WHERE id = {last}", (release.service, release.version)),
        ]
        rows = await self._atomic(statements)
        return schema.release_from_row(rows[0])

    async def releases(self, service: str, limit: int = 100) -> list[Release]:
        rows = await self._fetch(
            f"SELECT {schema.RELEASE_COLUMNS} FROM rb_releases WHERE service = $1 ORDER BY id DESC LIMIT $2",
            service,
            limit,
        )
        return [schema.release_from_row(r) for r in rows]

    @invalidates()
    async def update_release(self, release_id: int, **fields: Any) -> Release:
        unknown = set(fields) - set(schema.RELEASE_FIELDS)
        if unknown:
            raise ValueError(f"release fields {sorted(unknown)} cannot be updated")
        names = list(fields)
        sets = ", ".join(f"{n} = ${i + 2}" for i, n in enumerate(names))
        rows = await self._atomic(
            [
                (f"UPDATE rb_releases SET {sets} WHERE id = $1", (release_id, *fields.values())),
                (f"SELECT {schema.RELEASE_COLUMNS} FROM rb_releases WHERE id = $1", (release_id,)),
            ]
        )
        if not rows:
            raise NotFoundError(f"no release with id {release_id}")
        return schema.release_from_row(rows[0])

    @invalidates()
    async def change_release(
        self, release_id: int, *, change: str, actor: str, note: str, ts: float, **fields: Any
    ) -> Release:
        """Update a release and append ``change`` (a status, ``green``, ``baseline``) to its history."""
        unknown = set(fields) - set(schema.RELEASE_FIELDS)
        if unknown:
            raise ValueError(f"release fields {sorted(unknown)} cannot be updated")
        if change in schema.RELEASE_STATUSES:
            fields = {**fields, "status": change}
        names = list(fields)
        statements: list[Statement] = []
        if names:
            sets = ", ".join(f"{n} = ${i + 2}" for i, n in enumerate(names))
            statements.append((f"UPDATE rb_releases SET {sets} WHERE id = $1", (release_id, *fields.values())))
        statements += [
            (
                "INSERT INTO rb_release_history (release_id, service, version, ts, change, actor, note)"
                " SELECT id, service, version, CAST($2 AS DOUBLE PRECISION), CAST($3 AS TEXT), CAST($4 AS TEXT),"
                " CAST($5 AS TEXT) FROM rb_releases WHERE id = $1",
                (release_id, float(ts), change, actor, note),
            ),
            (f"SELECT {schema.RELEASE_COLUMNS} FROM rb_releases WHERE id = $1", (release_id,)),
        ]
        rows = await self._atomic(statements)
        if not rows:
            raise NotFoundError(f"no release with id {release_id}")
        return schema.release_from_row(rows[0])

    async def release_history(self, service: str, limit: int = 200) -> list[dict[str, Any]]:
        sql = f"SELECT {schema.HISTORY_COLUMNS} FROM rb_release_history WHERE service = $1 ORDER BY id DESC LIMIT $2"
        return await self._fetch(sql, service, limit)
