"""The Qdrant test server driven as rollbackd drives a real Qdrant: qdrant-client's AsyncQdrantClient
(REST) for collections, points, snapshots and aliases, plain aiohttp for snapshot download and upload."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import io
import json
import tarfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import pytest
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.common.version_check import get_server_version, is_compatible
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from tests.support.qdrant import QdrantTestServer, qdrant_server, qdrant_server_factory

__all__ = ["qdrant_server", "qdrant_server_factory"]  # fixtures used below

DIM = 8


def make_points(count: int, start: int = 0, tag: str = "v1") -> list[models.PointStruct]:
    return [
        models.PointStruct(
            id=i, vector=[float(i % 7 + 1), 1.0, *([0.5] * (DIM - 2))], payload={"n": i, "tag": tag, "parity": i % 2}
        )
        for i in range(start, start + count)
    ]


@pytest.fixture
async def client(qdrant_server: QdrantTestServer) -> AsyncIterator[AsyncQdrantClient]:
    qdrant = AsyncQdrantClient(url=qdrant_server.url, prefer_grpc=False, timeout=30, check_compatibility=False)
    try:
        yield qdrant
    finally:
        await qdrant.close()


async def new_collection(client: AsyncQdrantClient, name: str, count: int, tag: str = "v1") -> None:
    await client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
    if count:
        await client.upsert(name, points=make_points(count, tag=tag), wait=True)


async def download(url: str, headers: dict[str, str] | None = None) -> bytes:
    async with aiohttp.ClientSession(headers=headers) as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.read()


async def upload(url: str, data: bytes, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field(
        "snapshot",
        io.BytesIO(data),
        filename="upload.snapshot",  # a stream: no large-bytes warning
        content_type="application/octet-stream",
    )
    async with aiohttp.ClientSession() as session, session.post(url, data=form, params=params) as response:
        return response.status, await response.json()


async def all_points(client: AsyncQdrantClient, name: str) -> list[models.Record]:
    records, offset = [], None
    while True:
        page, offset = await client.scroll(name, limit=7, offset=offset, with_vectors=True)
        records.extend(page)
        if offset is None:
            return records


def test_server_version_is_compatible_with_the_client(qdrant_server: QdrantTestServer) -> None:
    server_version = get_server_version(qdrant_server.url, {}, None, 5)
    assert is_compatible(importlib.metadata.version("qdrant-client"), server_version)


async def test_collection_points_count_and_scroll(client: AsyncQdrantClient) -> None:
    await new_collection(client, "docs", 25)
    assert await client.collection_exists("docs") and not await client.collection_exists("other")
    await client.upsert(
        "docs",
        points=models.Batch(ids=[100, "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"], vectors=[[1.0] * DIM, [2.0] * DIM]),
    )
    assert (await client.count("docs", exact=True)).count == 27
    odd = models.Filter(must=[models.FieldCondition(key="parity", match=models.MatchValue(value=1))])
    assert (await client.count("docs", count_filter=odd)).count == 12
    records = await all_points(client, "docs")
    assert [r.id for r in records][:3] == [0, 1, 2] and records[-1].id == "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
    assert len(records) == 27 and records[3].payload == {"n": 3, "tag": "v1", "parity": 1}
    assert records[3].vector == [4.0, 1.0, *([0.5] * (DIM - 2))]
    page, _ = await client.scroll("docs", scroll_filter=odd, limit=3, with_payload=False)
    assert [(r.id, r.payload) for r in page] == [(1, None), (3, None), (5, None)]
    info = await client.get_collection("docs")
    assert (info.status, info.points_count) == (models.CollectionStatus.GREEN, 27)
    assert info.config.params.vectors == models.VectorParams(size=DIM, distance=models.Distance.DOT)
    assert [c.name for c in (await client.get_collections()).collections] == ["docs"]
    assert await client.delete_collection("docs") is True
    assert not await client.collection_exists("docs")


async def test_snapshot_download_upload_and_recover(client: AsyncQdrantClient, qdrant_server: QdrantTestServer) -> None:
    await new_collection(client, "docs", 40)
    snapshot = await client.create_snapshot("docs", wait=True)
    assert snapshot is not None and snapshot.name.startswith("docs-") and snapshot.name.endswith(".snapshot")
    assert snapshot in await client.list_snapshots("docs")
    url = f"{qdrant_server.url}/collections/docs/snapshots/{snapshot.name}"
    data = await download(url)
    assert len(data) == snapshot.size and hashlib.sha256(data).hexdigest() == snapshot.checksum
    upload_url = f"{qdrant_server.url}/collections/docs__rb_1/snapshots/upload"
    status, body = await upload(upload_url, data, {"priority": "snapshot", "checksum": snapshot.checksum})
    assert (status, body["result"], body["status"]) == (200, True, "ok")
    from_file = f"file://{qdrant_server.snapshots_dir}/docs/{snapshot.name}"
    assert await client.recover_snapshot(
        "docs__rb_2",
        location=from_file,
        checksum=snapshot.checksum,
        priority=models.SnapshotPriority.SNAPSHOT,
        wait=True,
    )
    assert await client.recover_snapshot(
        "docs__rb_3", location=url, checksum=snapshot.checksum, priority=models.SnapshotPriority.SNAPSHOT
    )
    original = await all_points(client, "docs")
    for name in ("docs__rb_1", "docs__rb_2", "docs__rb_3"):
        assert (await client.get_collection(name)).points_count == 40
        assert await all_points(client, name) == original
    assert await client.delete_snapshot("docs", snapshot.name, wait=True)
    assert await client.list_snapshots("docs") == []


async def test_recover_overwrites_an_existing_collection(
    client: AsyncQdrantClient, qdrant_server: QdrantTestServer
) -> None:
    await new_collection(client, "docs", 10, tag="old")
    snapshot = await client.create_snapshot("docs")
    assert snapshot is not None
    await client.upsert("docs", points=make_points(5, start=10, tag="new"))
    url = f"{qdrant_server.url}/collections/docs/snapshots/{snapshot.name}"
    assert await client.recover_snapshot("docs", location=url, priority=models.SnapshotPriority.SNAPSHOT)
    assert (await client.count("docs")).count == 10


async def test_checksum_mismatch_is_refused_and_nothing_changes(
    client: AsyncQdrantClient, qdrant_server: QdrantTestServer
) -> None:
    await new_collection(client, "docs", 12)
    await new_collection(client, "target", 3)
    snapshot = await client.create_snapshot("docs")
    assert snapshot is not None
    data = await download(f"{qdrant_server.url}/collections/docs/snapshots/{snapshot.name}")
    wrong = "0" * 64
    for name in ("target", "fresh"):
        status, body = await upload(
            f"{qdrant_server.url}/collections/{name}/snapshots/upload",
            data,
            {"priority": "snapshot", "checksum": wrong},
        )
        assert status == 400
        assert body["status"] == {"error": f"Checksum mismatch: expected {snapshot.checksum}, actual {wrong}"}
    for location in (
        f"file://{qdrant_server.snapshots_dir}/docs/{snapshot.name}",
        f"{qdrant_server.url}/collections/docs/snapshots/{snapshot.name}",
    ):
        with pytest.raises(UnexpectedResponse) as refused:
            await client.recover_snapshot("target", location=location, checksum=wrong)
        assert refused.value.status_code == 400
        assert b"Snapshot checksum mismatch: expected " + wrong.encode() in refused.value.content
    assert (await client.count("target")).count == 3
    assert not await client.collection_exists("fresh")


def short_vectors(snapshot: bytes) -> bytes:
    """A well-formed tar whose vector data lacks its last vector."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(snapshot)) as source, tarfile.open(fileobj=out, mode="w") as target:
        for member in source:
            content = source.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if member.name.endswith("vectors.f32"):
                content = content[: -DIM * 4]
                member.size = len(content)
            target.addfile(member, io.BytesIO(content))
    return out.getvalue()


async def test_corrupt_snapshot_is_refused_and_collection_untouched(
    client: AsyncQdrantClient, qdrant_server: QdrantTestServer
) -> None:
    await new_collection(client, "docs", 12)
    await new_collection(client, "target", 3)
    snapshot = await client.create_snapshot("docs")
    assert snapshot is not None
    data = await download(f"{qdrant_server.url}/collections/docs/snapshots/{snapshot.name}")
    for corrupt, error in (
        (b"\x00garbage" * 100, "Malformed tar archive"),
        (data[: len(data) // 2], "Malformed tar archive"),
        (short_vectors(data), "does not match its manifest"),
    ):
        status, body = await upload(
            f"{qdrant_server.url}/collections/target/snapshots/upload", corrupt, {"priority": "snapshot"}
        )
        assert status == 500 and body["status"]["error"].startswith("Service internal error: ")
        assert error in body["status"]["error"]
    bad = qdrant_server.snapshots_dir / "docs" / "broken.snapshot"
    bad.write_bytes(data[:1000])
    with pytest.raises(UnexpectedResponse) as refused:
        await client.recover_snapshot("target", location=f"file://{bad}")
    assert refused.value.status_code == 500 and b"Malformed tar archive" in refused.value.content
    assert (await client.count("target")).count == 3


async def test_priority_is_validated(client: AsyncQdrantClient, qdrant_server: QdrantTestServer) -> None:
    await new_collection(client, "docs", 2)
    snapshot = await client.create_snapshot("docs")
    assert snapshot is not None
    data = await download(f"{qdrant_server.url}/collections/docs/snapshots/{snapshot.name}")
    for priority in ("snapshot", "replica", "no_sync"):
        status, _ = await upload(
            f"{qdrant_server.url}/collections/p_{priority}/snapshots/upload", data, {"priority": priority}
        )
        assert status == 200
    status, body = await upload(f"{qdrant_server.url}/collections/p_bad/snapshots/upload", data, {"priority": "latest"})
    assert status == 400 and "unknown variant `latest`" in body["status"]["error"]


async def switch(client: AsyncQdrantClient, alias: str, target: str) -> None:
    action = models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=target, alias_name=alias))
    assert await client.update_collection_aliases(change_aliases_operations=[action])


async def test_single_create_alias_switches_without_a_gap(client: AsyncQdrantClient) -> None:
    await new_collection(client, "docs__v1", 4)
    await new_collection(client, "docs__v2", 6)
    await switch(client, "docs", "docs__v1")
    seen: set[int] = set()
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            seen.add((await client.count("docs")).count)  # a missing alias would raise a 404 here

    task = asyncio.create_task(reader())
    try:
        for i in range(200):
            await switch(client, "docs", "docs__v2" if i % 2 == 0 else "docs__v1")
            await asyncio.sleep(0)
    finally:
        done.set()
        await task
    assert seen <= {4, 6} and len(seen) == 2
    aliases = await client.get_collection_aliases("docs__v1")
    assert [(a.alias_name, a.collection_name) for a in aliases.aliases] == [("docs", "docs__v1")]


async def test_alias_rules(client: AsyncQdrantClient) -> None:
    await new_collection(client, "docs", 0)
    await new_collection(client, "docs__v1", 2)
    delete_missing = models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="never"))
    assert await client.update_collection_aliases(change_aliases_operations=[delete_missing])
    with pytest.raises(UnexpectedResponse) as onto_collection:
        await switch(client, "docs", "docs__v1")
    assert onto_collection.value.status_code == 409
    assert b"Collection `docs` already exists!" in onto_collection.value.content
    in_order = [
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="docs__v1", alias_name="a")),
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="missing", alias_name="b")),
    ]
    with pytest.raises(UnexpectedResponse) as partial:
        await client.update_collection_aliases(change_aliases_operations=in_order)
    assert partial.value.status_code == 404 and b"Collection `missing` doesn't exist!" in partial.value.content
    assert [a.alias_name for a in (await client.get_aliases()).aliases] == ["a"]  # no rollback of action 1
    rename = models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name="a", new_alias_name="r"))
    assert await client.update_collection_aliases(change_aliases_operations=[rename])
    await client.upsert("r", points=make_points(3, start=10))  # an alias works wherever a name does
    assert (await client.get_collection("r")).points_count == 5
    assert (await client.create_snapshot("r")).name.startswith("docs__v1-")  # type: ignore[union-attr]
    assert await client.delete_collection("docs__v1")
    assert (await client.get_aliases()).aliases == []


async def test_api_key_is_enforced(qdrant_server_factory: Callable[..., QdrantTestServer]) -> None:
    server = qdrant_server_factory(api_key="s3cret")
    anonymous = AsyncQdrantClient(url=server.url, prefer_grpc=False, check_compatibility=False)
    wrong = AsyncQdrantClient(url=server.url, prefer_grpc=False, check_compatibility=False, headers={"api-key": "nope"})
    with pytest.warns(UserWarning, match="insecure connection"):
        keyed = AsyncQdrantClient(url=server.url, prefer_grpc=False, check_compatibility=False, api_key="s3cret")
    try:
        for qdrant, message in (
            (anonymous, b"Must provide an API key or an Authorization bearer token"),
            (wrong, b"Invalid API key or JWT"),
        ):
            with pytest.raises(UnexpectedResponse) as denied:
                await qdrant.get_collections()
            assert (denied.value.status_code, denied.value.content) == (401, message)
        await keyed.create_collection("docs", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
        assert (await keyed.get_collections()).collections == [models.CollectionDescription(name="docs")]
        snapshot = await keyed.create_snapshot("docs")
        assert snapshot is not None
        url = f"{server.url}/collections/docs/snapshots/{snapshot.name}"
        assert await download(url, {"Authorization": "Bearer s3cret"})
        assert await keyed.recover_snapshot("copy", location=url, api_key="s3cret")
    finally:
        for qdrant in (anonymous, wrong, keyed):
            await qdrant.close()


async def test_fault_hook(client: AsyncQdrantClient, qdrant_server: QdrantTestServer) -> None:
    await new_collection(client, "docs", 1)
    qdrant_server.inject_fault(r"/collections/docs$", method="GET", status=503, message="node is busy")
    with pytest.raises(UnexpectedResponse) as failed:
        await client.get_collection("docs")
    assert failed.value.status_code == 503
    assert json.loads(failed.value.content)["status"] == {"error": "node is busy"}
    assert (await client.get_collection("docs")).points_count == 1  # times=1: consumed
    qdrant_server.inject_fault(r"/points/count$", status=None, delay_s=30, times=None)
    slow = AsyncQdrantClient(url=qdrant_server.url, prefer_grpc=False, timeout=1, check_compatibility=False)
    try:
        with pytest.raises(ResponseHandlingException) as hung:
            await slow.count("docs")
        assert isinstance(hung.value.source, httpx.TimeoutException)
    finally:
        await slow.close()
    assert len(qdrant_server.faults()) == 1
    qdrant_server.clear_faults()
    assert qdrant_server.faults() == [] and (await client.count("docs")).count == 1
    qdrant_server.inject_fault(r"/snapshots$", method="POST", drop=True)
    with pytest.raises(ResponseHandlingException) as dropped:
        await client.create_snapshot("docs")
    assert isinstance(dropped.value.source, httpx.RemoteProtocolError)


async def test_missing_collection_error_shape(client: AsyncQdrantClient, qdrant_server: QdrantTestServer) -> None:
    with pytest.raises(UnexpectedResponse) as missing:
        await client.get_collection("nope")
    assert missing.value.status_code == 404
    async with aiohttp.ClientSession() as session, session.get(f"{qdrant_server.url}/collections/nope") as response:
        body = await response.json()
    assert response.status == 404 and set(body) == {"status", "time"}
    assert body["status"] == {"error": "Not found: Collection `nope` doesn't exist!"}
    assert isinstance(body["time"], float)


async def test_state_survives_a_graceful_restart(qdrant_server: QdrantTestServer) -> None:
    first = AsyncQdrantClient(url=qdrant_server.url, prefer_grpc=False, check_compatibility=False)
    await new_collection(first, "docs__v1", 5)
    await switch(first, "docs", "docs__v1")
    snapshot = await first.create_snapshot("docs")
    await first.close()
    qdrant_server.restart()
    assert qdrant_server.returncode == 0  # SIGTERM is handled: a clean exit
    second = AsyncQdrantClient(url=qdrant_server.url, prefer_grpc=False, check_compatibility=False)
    try:
        assert (await second.count("docs")).count == 5
        assert await second.list_snapshots("docs__v1") == [snapshot]
    finally:
        await second.close()


async def test_hundred_thousand_points(qdrant_server: QdrantTestServer) -> None:
    base = qdrant_server.url + "/collections/big"
    vector = [0.25] * 64
    async with aiohttp.ClientSession() as session:
        async with session.put(base, json={"vectors": {"size": 64, "distance": "Cosine"}}) as response:
            assert response.status == 200
        for start in range(0, 100_000, 5_000):
            batch = {"batch": {"ids": list(range(start, start + 5_000)), "vectors": [vector] * 5_000}}
            body = io.BytesIO(json.dumps(batch).encode())  # a stream: aiohttp warns about large raw bytes
            async with session.put(
                base + "/points", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                assert response.status == 200
        async with session.post(base + "/snapshots") as response:
            snapshot = (await response.json())["result"]
        async with session.get(f"{base}/snapshots/{snapshot['name']}") as response:
            data = await response.read()
    assert hashlib.sha256(data).hexdigest() == snapshot["checksum"]
    status, _ = await upload(
        qdrant_server.url + "/collections/big2/snapshots/upload",
        data,
        {"priority": "snapshot", "checksum": snapshot["checksum"]},
    )
    assert status == 200
    client = AsyncQdrantClient(url=qdrant_server.url, prefer_grpc=False, check_compatibility=False)
    try:
        assert (await client.get_collection("big2")).points_count == 100_000
        page, _ = await client.scroll("big2", offset=99_999, with_vectors=True)
        assert page[0].id == 99_999 and page[0].vector == [0.125] * 64  # Cosine vectors are normalized
    finally:
        await client.close()
