"""`type: counts`: live rows per Postgres table and points per Qdrant collection against what the
restored snapshot's manifest says, within a tolerance.

Expected counts come from the incident's ``data.prepare`` step output (``restored.<store>.expected``);
on demand (no incident) from the snapshot set that belongs to the live release: the newest verified set
taken while it was live that is not a safety snapshot (right after a good rollback, the newest set is
the bad release's safety snapshot: never compare with that). With none: INCONCLUSIVE ("no manifest to
compare with"), never a pass. A count differs when
``|live - expected| > max(absolute, percent% of expected)``; ``exclude`` lists tables or collections
that legitimately change (``conversations``). Connection or query errors are ERROR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from rollbackd.reasons import Verdict
from rollbackd.records import JSON
from rollbackd.verify import BaseVerifier, CheckOptions, CheckResult, VerifyContext

if TYPE_CHECKING:
    from rollbackd.snapshots import SnapshotSet
    from rollbackd.snapshots.dataset import DataSet


class StoreConnection(BaseModel):
    """Where a store is counted live: ``dsn`` for Postgres, ``url`` (+ ``api_key``) for Qdrant."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dsn: SecretStr | None = None  # credential-bearing: from ${ENV} only, never printed
    url: str | None = None
    api_key: SecretStr | None = None


class Tolerance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    absolute: Annotated[int, Field(ge=0)] = 0
    percent: Annotated[float, Field(ge=0, le=100)] = 0.0

    def allows(self, live: int, expected: int) -> bool:
        return abs(live - expected) <= max(self.absolute, self.percent / 100 * expected)

    def text(self) -> str:
        return f"±{max(self.absolute, 0)}" + (f" or {self.percent:g}%" if self.percent else "")


class CountsOptions(CheckOptions):
    stores: Annotated[dict[str, StoreConnection], Field(min_length=1)]
    tolerance: Tolerance = Tolerance()
    exclude: list[str] = []
    timeout: float = 10.0


Expected = dict[str, dict[str, Any]]  # store -> {"kind": ..., "tables"|"collections": {name: count}}


def _from_prepare(output: JSON) -> Expected:
    out: Expected = {}
    for store, info in (output.get("restored") or {}).items():
        exp = info.get("expected") or {}
        counts = exp.get("tables") if info.get("kind") == "postgres" else exp.get("collections")
        if counts:
            out[store] = {"kind": info.get("kind"), "counts": {k: _count(v) for k, v in counts.items()}}
    return out


def _count(value: Any) -> int:
    """A manifest count: ``{"rows": n}`` / ``{"points": n}`` as data.prepare journals it, or a bare number."""
    if isinstance(value, dict):
        return int(value.get("rows") or value.get("points") or 0)
    return int(value)


def _from_manifests(manifests: dict[str, Any]) -> Expected:
    out: Expected = {}
    for store, manifest in manifests.items():
        m = manifest if isinstance(manifest, dict) else getattr(manifest, "__dict__", {})
        if m.get("tables"):
            out[store] = {"kind": "postgres", "counts": {k: _count(v) for k, v in m["tables"].items()}}
        elif m.get("collections"):
            out[store] = {"kind": "qdrant", "counts": {k: _count(v) for k, v in m["collections"].items()}}
    return out


async def live_release_set(snapshots: DataSet) -> tuple[SnapshotSet | None, str]:
    """(the newest verified non-safety set of the live release, its name); (None, ...) when there is none.
    Without release tracking, the newest verified non-safety set (the release is then unknown)."""
    release = await snapshots.live_release()
    for snap in await snapshots.list():
        if not snap.verified or snap.is_safety:  # the kind the set records (old sets: read from their reason)
            continue
        if release is None or snap.release == release:
            return snap, release or "(unknown: releases not tracked)"
    return None, release or "-"


class CountFailed(Exception):
    pass


class CountsVerifier(BaseVerifier):
    type: ClassVar[str] = "counts"
    Options = CountsOptions
    options: CountsOptions

    def describe(self) -> str:
        stores = ", ".join(self.options.stores)
        return f"counts: {stores} against the restored manifest ({self.options.tolerance.text()})"

    async def expected(self, ctx: VerifyContext) -> tuple[Expected, str]:
        prepared = ctx.step_output_of_type("data.prepare")
        if prepared:
            return _from_prepare(prepared), f"snapshot set {prepared.get('snapshot_set')}"
        snapshots = ctx.caps.snapshots
        if ctx.incident is None and snapshots is not None:
            snap, release = await live_release_set(snapshots)
            if snap is not None:
                return _from_manifests(dict(snap.manifests)), f"snapshot set {snap.id} of the live release {release}"
        return {}, ""

    def _excluded(self, name: str) -> bool:
        return name in self.options.exclude or name.rpartition(".")[2] in self.options.exclude

    async def verify(self, ctx: VerifyContext) -> CheckResult:
        expected, source = await self.expected(ctx)
        expected = {
            s: e for s, e in expected.items() if {k: v for k, v in e["counts"].items() if not self._excluded(k)}
        }
        if not expected:
            return self.result(Verdict.INCONCLUSIVE, "no manifest to compare with")
        rows: list[dict[str, Any]] = []
        try:
            for store, exp in expected.items():
                conn = self.options.stores.get(store)
                if conn is None:
                    return self.result(
                        Verdict.ERROR,
                        f"store {store}: no connection configured under verify.checks[{self.name}].stores",
                    )
                live = await (
                    _count_postgres(conn, list(exp["counts"]), self.options.timeout)
                    if exp["kind"] == "postgres"
                    else _count_qdrant(conn, list(exp["counts"]), self.options.timeout)
                )
                for name, want in exp["counts"].items():
                    if not self._excluded(name):
                        rows.append(
                            {
                                "store": store,
                                "name": name,
                                "expected": want,
                                "live": live[name],
                                "ok": self.options.tolerance.allows(live[name], want),
                            }
                        )
        except CountFailed as exc:
            return self.result(Verdict.ERROR, str(exc))
        bad = [r for r in rows if not r["ok"]]
        figures: dict[str, float | int | str] = {"compared": len(rows), "mismatches": len(bad)}
        details = {"against": source, "counts": rows, "tolerance": self.options.tolerance.model_dump()}
        if bad:
            text = "; ".join(f"{r['name']}: {r['live']} live, {r['expected']} expected" for r in bad)
            return self.result(
                Verdict.FAIL, f"{text} (tolerance {self.options.tolerance.text()})", details=details, figures=figures
            )
        return self.result(
            Verdict.PASS, f"{len(rows)} tables/collections match {source}", details=details, figures=figures
        )


def _quote_table(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


async def _count_postgres(conn: StoreConnection, tables: list[str], timeout: float) -> dict[str, int]:
    import asyncpg

    if not conn.dsn:
        raise CountFailed("a postgres store needs `dsn`")
    try:
        db = await asyncpg.connect(conn.dsn.get_secret_value(), timeout=timeout)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise CountFailed(f"postgres: cannot connect: {type(exc).__name__}: {exc}") from exc
    try:
        out: dict[str, int] = {}
        for table in tables:
            try:
                out[table] = int(await db.fetchval(f"SELECT count(*) FROM {_quote_table(table)}", timeout=timeout))
            except asyncpg.UndefinedTableError:
                out[table] = 0  # a table the manifest has and the live database lacks: 0 rows, a mismatch
            except (asyncpg.PostgresError, TimeoutError) as exc:
                raise CountFailed(f"postgres: counting {table} failed: {exc}") from exc
        return out
    finally:
        await db.close()


async def _count_qdrant(conn: StoreConnection, names: list[str], timeout: float) -> dict[str, int]:
    from qdrant_client import AsyncQdrantClient
    from qdrant_client.http.exceptions import UnexpectedResponse

    if not conn.url:
        raise CountFailed("a qdrant store needs `url`")
    api_key = conn.api_key.get_secret_value() if conn.api_key else None
    client = AsyncQdrantClient(
        url=conn.url, api_key=api_key, timeout=int(timeout), prefer_grpc=False, check_compatibility=False
    )
    out: dict[str, int] = {}
    try:
        for name in names:
            try:
                counted = await client.count(name, exact=True)
            except UnexpectedResponse as exc:
                if exc.status_code == 404:
                    out[name] = 0
                    continue
                raise CountFailed(f"qdrant: {name}: HTTP {exc.status_code}") from exc
            except Exception as exc:  # httpx transport errors: connection refused, timeouts
                raise CountFailed(f"qdrant: {name}: {type(exc).__name__}: {exc}") from exc
            out[name] = int(counted.count)
        return out
    finally:
        await client.close()
