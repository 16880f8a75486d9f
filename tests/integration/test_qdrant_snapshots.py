"""QdrantSnapshotter against the Qdrant test server (tests/qdrant_server, a separate process speaking
Qdrant's REST API): snapshot + download with sha256, restore aside by upload with the checksum, points
checked, the alias switched by one create_alias, errors naming the endpoint, alias adoption."""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from rollbackd.errors import BackendError, FatalError
from rollbackd.snapshots.qdrant import SNAPSHOT_FILE, QdrantOptions, QdrantSnapshotter
from tests.support.corpus import load_points
from tests.support.qdrant import QdrantTestServer

pytestmark = pytest.mark.integration


def make(url: str, alias: str = "docs", api_key: str | None = None) -> QdrantSnapshotter:
    return QdrantSnapshotter(QdrantOptions(url=url, alias=alias, api_key=api_key), name="qdrant")  # type: ignore[arg-type]


@pytest.fixture
async def client(qdrant_server: QdrantTestServer) -> AsyncIterator[AsyncQdrantClient]:
    c = AsyncQdrantClient(url=qdrant_server.url, check_compatibility=False)
    yield c
    await c.close()


async def alias_target(client: AsyncQdrantClient, alias: str) -> str | None:
    found = [a.collection_name for a in (await client.get_aliases()).aliases if a.alias_name == alias]
    return found[0] if found else None


async def test_snapshot_restore_aside_and_swap_by_alias(
    qdrant_server: QdrantTestServer, client: AsyncQdrantClient, tmp_path: Path
) -> None:
    await load_points(qdrant_server.url, "docs_v1", count=120, alias="docs")
    snap = make(qdrant_server.url)
    try:
        manifest = await snap.create(tmp_path)
        data = (tmp_path / SNAPSHOT_FILE).read_bytes()
        assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["collections"] == {"docs": {"points": 120}} and manifest["collection"] == "docs_v1"
        assert await client.list_snapshots("docs_v1") == []  # the node's copy is removed after download
        # the live collection changes after the snapshot (a bad deploy re-indexes)
        await client.delete_collection("docs_v1")
        await load_points(qdrant_server.url, "docs_v2", count=75, alias="docs")
        restored = await snap.prepare(manifest, tmp_path, "20260101_000000_aa")
        assert restored["collection"].startswith("docs__rb_20260101_000000_aa_")
        assert restored["expected"] == {"collections": {"docs": 120}}
        assert await alias_target(client, "docs") == "docs_v2"  # nothing live changed yet
        swapped = await snap.swap(restored, "inc-1")
        assert await alias_target(client, "docs") == restored["collection"]
        assert (await client.get_collection("docs")).points_count == 120
        assert swapped["kept"] == "docs_v2" and await client.collection_exists("docs_v2")
        assert await snap.is_swapped(restored, "inc-1")
        print(f"qdrant alias switch took {swapped['downtime_s'] * 1000:.1f} ms")
        back = await snap.roll_forward(swapped, "inc-2")
        assert back["current"] == "docs_v2" and await snap.is_rolled_forward(swapped, "inc-2")
        assert (await client.get_collection("docs")).points_count == 75
    finally:
        await snap.close()


async def test_errors_name_the_endpoint_and_qdrants_message(qdrant_server: QdrantTestServer, tmp_path: Path) -> None:
    await load_points(qdrant_server.url, "docs_v1", count=10, alias="docs")
    snap = make(qdrant_server.url)
    try:
        qdrant_server.inject_fault(
            r"/collections/docs_v1/snapshots$", method="POST", status=503, message="disk is busy"
        )
        with pytest.raises(BackendError) as info:
            await snap.create(tmp_path)
        assert "POST /collections/docs_v1/snapshots: 503" in str(info.value) and "disk is busy" in str(info.value)
        assert info.value.retryable
        manifest = await snap.create(tmp_path)
        qdrant_server.inject_fault(r"/snapshots/upload$", method="POST", status=400, message="bad upload")
        with pytest.raises(BackendError) as info:
            await snap.prepare(manifest, tmp_path, "x1")
        assert re.search(r"POST /collections/docs__rb_x1_[0-9a-f]{4}/snapshots/upload: 400 bad upload", str(info.value))
        assert not info.value.retryable
        # a file that does not match its checksum is refused by Qdrant before anything changes
        (tmp_path / SNAPSHOT_FILE).write_bytes(b"not the snapshot")
        with pytest.raises(BackendError, match="upload: 4"):
            await snap.prepare(manifest, tmp_path, "x2")
        assert not [c for c in await snap.http.collections() if c.startswith("docs__rb_")]
    finally:
        await snap.close()


async def test_unreachable_server_is_retryable(tmp_path: Path) -> None:
    snap = make("http://127.0.0.1:9")
    try:
        with pytest.raises(BackendError) as info:
            await snap.create(tmp_path)
        assert "GET /aliases" in str(info.value) and info.value.retryable
    finally:
        await snap.close()


async def test_adopt_alias_for_an_existing_collection(
    qdrant_server: QdrantTestServer, client: AsyncQdrantClient, tmp_path: Path
) -> None:
    await load_points(qdrant_server.url, "docs", count=40)
    snap = make(qdrant_server.url)
    try:
        with pytest.raises(FatalError, match="adopt-alias"):
            await snap.check_swap({"collection": "docs"})
        result = await snap.adopt_alias(tmp_path)
        assert result["adopted"] and result["collection"] == "docs__v1" and result["points"] == 40
        print(f"adopt-alias window: {result['window_s'] * 1000:.1f} ms")
        assert await alias_target(client, "docs") == "docs__v1"
        assert (await client.get_collection("docs")).points_count == 40
        again = await snap.adopt_alias(tmp_path / "again")
        assert again["adopted"] is False
    finally:
        await snap.close()


async def test_api_key_is_sent(qdrant_server_factory: Callable[..., QdrantTestServer], tmp_path: Path) -> None:
    server = qdrant_server_factory(api_key="test-qdrant-key-123")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Api key is used with an insecure connection")
        await load_points(server.url, "docs_v1", count=5, alias="docs", api_key="test-qdrant-key-123")
    snap = make(server.url, api_key="test-qdrant-key-123")
    wrong = make(server.url, api_key="wrong-key")
    try:
        manifest = await snap.create(tmp_path)
        restored = await snap.prepare(manifest, tmp_path, "k1")
        assert restored["expected"]["collections"]["docs"] == 5
        with pytest.raises(BackendError, match="GET /aliases: 40"):
            await wrong.create(tmp_path / "w")
    finally:
        await snap.close()
        await wrong.close()


async def test_recover_mode_uses_recover_snapshot_with_checksum(
    qdrant_server: QdrantTestServer, client: AsyncQdrantClient
) -> None:
    """A node that sees rollbackd's snapshot directory (here: inside its own snapshots path) recovers by file://."""
    await load_points(qdrant_server.url, "docs_v1", count=30, alias="docs")
    snap = QdrantSnapshotter(QdrantOptions(url=qdrant_server.url, alias="docs", restore_via="recover"))
    store = qdrant_server.snapshots_dir / "rollbackd-store"
    store.mkdir(parents=True)
    try:
        manifest = await snap.create(store)
        restored = await snap.prepare(manifest, store, "r1")
        assert (await client.get_collection(restored["collection"])).points_count == 30
        bad = dict(manifest, sha256="0" * 64)
        with pytest.raises(
            BackendError, match=r"PUT /collections/docs__rb_r2_[0-9a-f]{4}/snapshots/recover: 4\d\d .*checksum"
        ):
            await snap.prepare(bad, store, "r2")
    finally:
        await snap.close()


async def test_timeout_names_the_endpoint(qdrant_server: QdrantTestServer, tmp_path: Path) -> None:
    await load_points(qdrant_server.url, "docs_v1", count=5, alias="docs")
    snap = QdrantSnapshotter(QdrantOptions(url=qdrant_server.url, alias="docs", timeout=1))
    try:
        qdrant_server.inject_fault(r"^/aliases$", method="GET", status=None, delay_s=3)
        with pytest.raises(BackendError, match=r"GET /aliases: .*Timeout") as info:
            await snap.create(tmp_path)
        assert info.value.retryable
    finally:
        await snap.close()
