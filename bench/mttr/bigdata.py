"""The large corpus of the MTTR benchmark: Postgres grown to `mb` MB (tests.support.corpus.generate_large) and a
Qdrant collection of `points` points put behind the alias the service and rollbackd read (`docs`), replacing the
stack's small `docs__v1`; and the bad deploy's change to the collection (next to corpus.change_corpus)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import numpy as np

from tests.support import corpus

BIG_COLLECTION = "docs__big"
ALIAS = "docs"
SMALL_COLLECTION = "docs__v1"  # what tests/e2e/stack.py made


def _client(url: str) -> Any:
    from qdrant_client import AsyncQdrantClient

    return AsyncQdrantClient(url=url, timeout=120, check_compatibility=False)


async def _doc_payloads(dsn: str) -> list[dict[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, title, source FROM docs ORDER BY id")
    finally:
        await conn.close()
    return [{"doc_id": r["id"], "title": r["title"], "source": r["source"]} for r in rows]


def _filler_vectors(count: int, dim: int, seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    norms: np.ndarray[Any, Any] = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray[Any, Any] = vectors / norms
    return unit


async def load_big_collection(url: str, dsn: str, *, points: int, dim: int = 64, batch: int = 1000) -> int:
    """One point per document of the corpus (as the stack's collection has), then synthetic filler up to
    `points`; the alias moves to it atomically and the small collection is dropped. Returns points_count."""
    from qdrant_client import models

    docs = await _doc_payloads(dsn)
    filler = max(points - len(docs), 0)
    vectors = _filler_vectors(filler, dim, seed=7)
    client = _client(url)
    try:
        await client.create_collection(
            BIG_COLLECTION, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
        )
        structs = [
            models.PointStruct(id=i + 1, vector=corpus.point_vector(p["doc_id"], dim), payload=p)
            for i, p in enumerate(docs)
        ]
        await client.upsert(BIG_COLLECTION, points=structs, wait=True)
        base = len(docs) + 1
        for lo in range(0, filler, batch):
            chunk = vectors[lo : lo + batch]
            structs = [
                models.PointStruct(
                    id=base + lo + i,
                    vector=v.tolist(),
                    payload={"doc_id": f"bulk-{lo + i}", "title": "", "source": "bulk"},
                )
                for i, v in enumerate(chunk)
            ]
            await client.upsert(BIG_COLLECTION, points=structs, wait=True)
        await client.update_collection_aliases(
            change_aliases_operations=[
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=ALIAS)),
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=BIG_COLLECTION, alias_name=ALIAS)
                ),
            ]
        )
        await client.delete_collection(SMALL_COLLECTION)
        info = await client.get_collection(ALIAS)
        return int(info.points_count or 0)
    finally:
        await client.close()


async def change_collection(url: str, *, rewritten_ids: list[int], junk: int = 40, dim: int = 64) -> int:
    """What the bad deploy does to the vectors (the test server has no point deletion): the rewritten
    documents' points get new vectors, junk points arrive. Returns the new points_count."""
    from qdrant_client import models

    client = _client(url)
    try:
        moved = [
            models.PointStruct(
                id=i,
                vector=corpus.point_vector(f"rewritten-{i}", dim, seed=2),
                payload={"doc_id": f"doc-{i:04d}", "title": "rewritten", "source": "bad-deploy"},
            )
            for i in rewritten_ids
        ]
        structs = [
            models.PointStruct(
                id=10_000_000 + n,
                vector=corpus.point_vector(f"junk-{n}", dim),
                payload={"doc_id": f"junk-{n:04d}", "title": "Scraped page", "source": corpus.JUNK_SOURCE},
            )
            for n in range(1, junk + 1)
        ]
        await client.upsert(ALIAS, points=moved + structs, wait=True)
        return int((await client.get_collection(ALIAS)).points_count or 0)
    finally:
        await client.close()


async def database_mb(dsn: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())")) / 2**20
    finally:
        await conn.close()


def grow(stack_dsn: str, qdrant_url: str, *, mb: int, points: int) -> dict[str, float]:
    """Both stores, timed; returns what was made."""
    t0 = time.monotonic()
    size = asyncio.run(corpus.generate_large(stack_dsn, mb))
    t1 = time.monotonic()
    count = asyncio.run(load_big_collection(qdrant_url, stack_dsn, points=points))
    t2 = time.monotonic()
    return {"db_mb": size / 2**20, "pg_s": t1 - t0, "points": float(count), "qdrant_s": t2 - t1}
