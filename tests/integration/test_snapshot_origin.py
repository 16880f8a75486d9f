"""Snapshots know whose they are (issue 11, point 4): a set of another service, database or server is refused
before anything is written, unless the restore names the service it was taken of."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rollbackd.errors import FatalError
from rollbackd.snapshots.dataset import DataSet
from rollbackd.snapshots.postgres import PostgresOptions, PostgresSnapshotter
from rollbackd.snapshots.qdrant import QdrantOptions, QdrantSnapshotter
from rollbackd.snapshots.retention import prune
from rollbackd.snapshots.store import SnapshotStore
from tests.support.corpus import create_corpus, table_counts
from tests.support.pg import drop_database, fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture
async def other_dsn() -> AsyncIterator[str]:
    dsn = await fresh_database("rbt_origin_b")
    try:
        yield dsn
    finally:
        await drop_database(dsn)


def service(name: str, dsn: str, root: Path) -> DataSet:
    snap = PostgresSnapshotter(PostgresOptions(dsn=dsn), name="postgres")  # type: ignore[arg-type]
    return DataSet(service=name, store=SnapshotStore(root, name), snapshotters={"postgres": snap})


async def test_a_set_of_another_service_and_database_is_refused_unless_named(
    pg_dsn: str, other_dsn: str, tmp_path: Path
) -> None:
    await create_corpus(pg_dsn, docs=120)
    await create_corpus(other_dsn, docs=80)
    a, b = service("a", pg_dsn, tmp_path / "one_dir"), service("b", other_dsn, tmp_path / "one_dir")
    snap = await a.create(reason="a's green data")
    assert snap.manifests["postgres"]["server"]["system_identifier"]
    assert snap.manifests["postgres"]["store"] == "postgres"
    with pytest.raises(FatalError, match=r"taken of service a \(this is b\); postgres: database .*allow_foreign='a'"):
        await b.restore(snap.id, "20261122-031502-a1b2")
    assert (await table_counts(other_dsn))["docs"] == 80 and [s.id for s in await b.list()] == [snap.id]
    with pytest.raises(FatalError, match="refused"):
        await b.restore(snap.id, "20261122-031502-a1b3", allow_foreign="b")  # the wrong name
    assert await b.restore_target() is None and await b.latest() is None  # never chosen by itself
    pruned = await prune(b, keep_last=1)
    assert pruned["deleted"] == [] and [s.id for s in await a.list()] == [snap.id]  # nor pruned by b
    done = await b.restore(snap.id, "20261122-031502-a1b4", allow_foreign="a")
    assert done["snapshot_set"] == snap.id and (await table_counts(other_dsn))["docs"] == 120


async def test_a_set_of_another_server_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    await create_corpus(pg_dsn, docs=50)
    data = service("rag", pg_dsn, tmp_path / "store")
    snap = await data.create(reason="green")
    assert snap.path is not None
    manifest = json.loads((snap.path / "manifest.json").read_text())
    manifest["stores"]["postgres"]["server"] = {"system_identifier": "1234", "address": "elsewhere:5432"}
    (snap.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FatalError, match="PostgreSQL server 1234 at elsewhere:5432"):
        await data.restore(snap.id, "20261122-031502-a1b2")
    assert len(await data.list()) == 1  # no safety snapshot


async def test_qdrant_origin_is_its_alias_and_server() -> None:
    snap = QdrantSnapshotter(QdrantOptions(url="http://127.0.0.1:6333", alias="docs"))  # type: ignore[arg-type]
    try:
        assert await snap.origin_problems({"alias": "docs", "server": "http://127.0.0.1:6333"}) == []
        assert await snap.origin_problems({"alias": "faq", "server": "http://q2:6333"}) == [
            "alias faq (this store's is docs)",
            "Qdrant at http://q2:6333 (this store's is http://127.0.0.1:6333)",
        ]
    finally:
        await snap.close()
