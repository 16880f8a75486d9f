"""The Snapshotter contract: every backend subclasses SnapshotterContract against its real far end and
provides three fixtures: ``snapshotter`` (a fresh instance on live data, closed afterwards), ``mutate`` (an
async function that changes the live data as a bad deploy would) and ``live_count`` (an async function
returning the live row/point count the manifest's counts are compared with)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from rollbackd.errors import BackendError, FatalError
from rollbackd.snapshots import Snapshotter
from rollbackd.snapshots.postgres import PostgresOptions, PostgresSnapshotter
from rollbackd.snapshots.qdrant import QdrantOptions, QdrantSnapshotter
from tests.support.corpus import change_corpus, create_corpus, load_points, table_counts
from tests.support.qdrant import QdrantTestServer

pytestmark = pytest.mark.integration
Count = Callable[[], Awaitable[int]]


class SnapshotterContract:
    expected_kind = ""

    def manifest_count(self, manifest: dict[str, Any]) -> int:
        raise NotImplementedError

    def expected_count(self, restored: dict[str, Any]) -> int:
        raise NotImplementedError

    async def test_create_writes_a_manifest_with_counts(
        self, snapshotter: Snapshotter, live_count: Count, tmp_path: Path
    ) -> None:
        manifest = await snapshotter.create(tmp_path)
        assert manifest["kind"] == self.expected_kind == snapshotter.kind
        assert self.manifest_count(manifest) == await live_count()
        assert any(tmp_path.rglob("*")), "create wrote no files"
        assert await snapshotter.estimate_bytes() > 0
        assert "durations" in manifest

    async def test_prepare_swap_roll_forward(
        self, snapshotter: Snapshotter, mutate: Callable[[], Awaitable[None]], live_count: Count, tmp_path: Path
    ) -> None:
        manifest = await snapshotter.create(tmp_path)
        before = await live_count()
        await mutate()
        changed = await live_count()
        assert changed != before
        restored = await snapshotter.prepare(manifest, tmp_path, "20260101_000000_c1")
        assert restored["kind"] == snapshotter.kind and self.expected_count(restored) == before
        assert await snapshotter.is_prepared(restored)
        assert await live_count() == changed  # preparing touches nothing live
        await snapshotter.check_swap(restored)
        assert not await snapshotter.is_swapped(restored, "inc-c1")
        swapped = await snapshotter.swap(restored, "inc-c1")
        assert swapped["downtime_s"] >= 0 and swapped["kept"]
        assert await snapshotter.is_swapped(restored, "inc-c1")
        assert await live_count() == before
        assert not await snapshotter.is_rolled_forward(swapped, "inc-c2")
        await snapshotter.roll_forward(swapped, "inc-c2")
        assert await snapshotter.is_rolled_forward(swapped, "inc-c2")
        assert await live_count() == changed

    async def test_discard_is_idempotent(self, snapshotter: Snapshotter, live_count: Count, tmp_path: Path) -> None:
        manifest = await snapshotter.create(tmp_path)
        restored = await snapshotter.prepare(manifest, tmp_path, "20260101_000000_c3")
        await snapshotter.discard(restored)
        assert not await snapshotter.is_prepared(restored)
        await snapshotter.discard(restored)
        with pytest.raises((FatalError, BackendError)):
            await snapshotter.check_swap(restored)

    async def test_nothing_live_or_kept_is_ever_dropped(
        self, snapshotter: Snapshotter, live_count: Count, tmp_path: Path
    ) -> None:
        """Restore the same set twice: fresh copy names, the live one never dropped (asked of the server), the
        replaced ones kept and listed, never orphans."""
        manifest = await snapshotter.create(tmp_path)
        first = await snapshotter.prepare(manifest, tmp_path, "20260101_000000_c4")
        swapped = await snapshotter.swap(first, "20261122-031502-a1b2")
        second = await snapshotter.prepare(manifest, tmp_path, "20260101_000000_c4")
        assert (second.get("database") or second["collection"]) != (first.get("database") or first["collection"])
        await snapshotter.swap(second, "20261122-031600-c3d4")
        now = await snapshotter.live()
        live = now.get("database") or now["collection"]
        with pytest.raises(FatalError, match="refusing"):
            await snapshotter.discard({"database": live, "collection": live})
        assert await snapshotter.copies() == []
        kept = await snapshotter.kept()
        assert {k["tag"] for k in kept} >= {"20261122_031502_a1b2", "20261122_031600_c3d4"}
        assert swapped["kept"] in {k["name"] for k in kept}
        assert await live_count() == self.manifest_count(manifest)

    async def test_live_describes_what_a_restore_replaces(self, snapshotter: Snapshotter) -> None:
        live = await snapshotter.live()
        assert live["kind"] == snapshotter.kind


class TestPostgresSnapshotter(SnapshotterContract):
    expected_kind = "postgres"

    @pytest.fixture
    async def snapshotter(self, pg_dsn: str) -> AsyncIterator[Snapshotter]:
        await create_corpus(pg_dsn, docs=150)
        snap = PostgresSnapshotter(PostgresOptions(dsn=pg_dsn))  # type: ignore[arg-type]
        yield snap
        await snap.close()

    @pytest.fixture
    def mutate(self, pg_dsn: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await change_corpus(pg_dsn)

        return run

    @pytest.fixture
    def live_count(self, pg_dsn: str) -> Count:
        async def count() -> int:
            return (await table_counts(pg_dsn))["docs"]

        return count

    def manifest_count(self, manifest: dict[str, Any]) -> int:
        return int(manifest["tables"]["public.docs"]["rows"])

    def expected_count(self, restored: dict[str, Any]) -> int:
        return int(restored["expected"]["tables"]["public.docs"]["rows"])


class TestQdrantSnapshotter(SnapshotterContract):
    expected_kind = "qdrant"

    @pytest.fixture
    async def snapshotter(self, qdrant_server: QdrantTestServer) -> AsyncIterator[Snapshotter]:
        await load_points(qdrant_server.url, "docs_v1", count=60, alias="docs")
        snap = QdrantSnapshotter(QdrantOptions(url=qdrant_server.url, alias="docs"))
        yield snap
        await snap.close()

    @pytest.fixture
    def mutate(self, qdrant_server: QdrantTestServer) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await load_points(qdrant_server.url, "docs_v2", count=45, alias="docs")

        return run

    @pytest.fixture
    def live_count(self, qdrant_server: QdrantTestServer) -> Count:
        async def count() -> int:
            from qdrant_client import AsyncQdrantClient

            client = AsyncQdrantClient(url=qdrant_server.url, check_compatibility=False)
            try:
                return int((await client.get_collection("docs")).points_count or 0)
            finally:
                await client.close()

        return count

    def manifest_count(self, manifest: dict[str, Any]) -> int:
        return int(manifest["collections"]["docs"]["points"])

    def expected_count(self, restored: dict[str, Any]) -> int:
        return int(restored["expected"]["collections"]["docs"])
