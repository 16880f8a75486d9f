"""The RAG service's test data: a deterministic corpus in Postgres and its points in Qdrant.

- 20 fact documents (`doc-0001`..`doc-0020`, the same for every seed) answer the golden questions in
  tests/data/golden.yaml; the rest are seeded filler whose words never occur in a fact document, so lexical
  retrieval finds the right fact document for each golden question.
- `conversations` is the users' history a corpus rollback must keep; `schema_version` is what the snapshot
  manifest's schema query reads.
- `change_corpus` is what a bad deploy does to the data; `generate_large` fills `chunks` for benchmarks.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from tests.ragservice.retrieval import Doc, tokens

SOURCES = ("handbook", "engineering-wiki", "support-kb", "policies", "release-notes")
JUNK_SOURCE = "unreviewed-crawl"
SCHEMA_VERSION = 1

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS docs (
    id text PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    source text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS docs_fts ON docs USING gin (to_tsvector('simple', title || ' ' || body));
CREATE TABLE IF NOT EXISTS chunks (
    id bigserial PRIMARY KEY,
    doc_id text NOT NULL,
    ord int NOT NULL,
    text text NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id serial PRIMARY KEY,
    question text NOT NULL,
    answer text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS schema_version (version int NOT NULL);
INSERT INTO schema_version (version) SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM schema_version);
"""


@dataclass(frozen=True)
class Fact:
    id: str
    title: str
    source: str
    sentence: str  # the ground truth
    question: str
    extra: str


def _fact(n: int, title: str, source: str, sentence: str, question: str, extra: str) -> Fact:
    return Fact(f"doc-{n:04d}", title, source, sentence, question, extra)


FACTS: tuple[Fact, ...] = (
    _fact(
        1,
        "Heron telescope mirror",
        "engineering-wiki",
        "The Heron telescope mirror is four meters wide and was polished in Tromso by Lindqvist Optics.",
        "How wide is the Heron telescope mirror and where was it polished?",
        "Its beryllium backing keeps the Heron mirror stiff during slews.",
    ),
    _fact(
        2,
        "Kestrel battery warranty",
        "support-kb",
        "The Kestrel drone battery warranty lasts eighteen months and covers swelling but not water damage.",
        "How many months does the Kestrel drone battery warranty last?",
        "Claims for a Kestrel battery need the serial number from the label.",
    ),
    _fact(
        3,
        "Osprey release cadence",
        "release-notes",
        "Osprey firmware releases ship every second Tuesday after a canary phase on five percent of devices.",
        "When do Osprey firmware releases ship?",
        "Each Osprey release carries a signed changelog.",
    ),
    _fact(
        4,
        "Expense approval limits",
        "policies",
        "Expenses above two thousand euros need approval from the finance controller Marta Quispe.",
        "Who gives approval for expenses above two thousand euros?",
        "Smaller expenses are approved by the team lead.",
    ),
    _fact(
        5,
        "Parental leave",
        "handbook",
        "Parental leave at Northwind is twenty weeks at full salary for every parent.",
        "How many weeks of parental leave at full salary does Northwind give every parent?",
        "Parental leave can be split into two blocks.",
    ),
    _fact(
        6,
        "Vault credential rotation",
        "engineering-wiki",
        "Database credentials in the Vault cluster rotate every six hours through the Pelican rotator service.",
        "How often do database credentials in the Vault cluster rotate?",
        "The Pelican rotator writes an audit event for each rotation.",
    ),
    _fact(
        7,
        "Premium support hours",
        "support-kb",
        "The premium support desk answers calls from seven in the morning until ten at night, Lisbon time.",
        "When does the premium support desk answer calls?",
        "Premium support tickets get a first reply within one hour.",
    ),
    _fact(
        8,
        "Cormorant datacenter",
        "engineering-wiki",
        "The Cormorant datacenter in Reykjavik runs on geothermal power and hosts the archive storage tier.",
        "Which power does the Cormorant datacenter in Reykjavik run on?",
        "Cormorant racks are cooled with outside air.",
    ),
    _fact(
        9,
        "Laptop refresh",
        "handbook",
        "Employee laptops are refreshed every three years, and the old laptop may be bought back for one euro.",
        "How often are employee laptops refreshed?",
        "Laptop orders go through the equipment portal.",
    ),
    _fact(
        10,
        "Incident severity",
        "policies",
        "A severity one incident pages the on-call engineer within five minutes and opens a bridge call.",
        "What does a severity one incident page and open?",
        "Severity two incidents are handled in business hours.",
    ),
    _fact(
        11,
        "Albatross API rate limit",
        "release-notes",
        "The Albatross public API allows six hundred requests per minute for each token since version nine.",
        "How many requests per minute does the Albatross public API allow for each token?",
        "Albatross returns status 429 with a Retry-After header above the limit.",
    ),
    _fact(
        12,
        "Travel class",
        "policies",
        "Business class travel is allowed only for flights longer than nine hours.",
        "When is business class travel allowed for flights?",
        "Economy class is the default for every other trip.",
    ),
    _fact(
        13,
        "Puffin sensor calibration",
        "support-kb",
        "Puffin humidity sensors must be recalibrated after every firmware update using the saline jar method.",
        "How must Puffin humidity sensors be recalibrated after a firmware update?",
        "A Puffin sensor that drifts more than three points needs replacement.",
    ),
    _fact(
        14,
        "Office dogs",
        "handbook",
        "Dogs are welcome in the Porto office on Fridays if they are registered with reception.",
        "When are dogs welcome in the Porto office?",
        "Dogs must stay out of the Porto kitchen.",
    ),
    _fact(
        15,
        "Backup retention",
        "policies",
        "Nightly backups are kept for thirty five days and monthly backups for seven years in cold storage.",
        "How long are nightly backups and monthly backups kept?",
        "Restore tests of the backups run every quarter.",
    ),
    _fact(
        16,
        "Gannet search ranking",
        "engineering-wiki",
        "The Gannet search service ranks documents with a hybrid of keyword scoring and vector similarity "
        "weighted sixty to forty.",
        "How does the Gannet search service rank documents?",
        "Gannet rebuilds its keyword index every night.",
    ),
    _fact(
        17,
        "Refund window",
        "support-kb",
        "Customers can request a refund within thirty days of purchase through the billing portal.",
        "Within how many days of purchase can customers request a refund?",
        "Refunds reach the customer card within a week.",
    ),
    _fact(
        18,
        "Tern mobile app support",
        "release-notes",
        "The Tern mobile app dropped support for Android eight in release forty two.",
        "Which release of the Tern mobile app dropped support for Android eight?",
        "Tern users on old phones see an upgrade banner.",
    ),
    _fact(
        19,
        "Security training",
        "handbook",
        "Every employee completes security awareness training each quarter, including a phishing simulation.",
        "How often does every employee complete security awareness training?",
        "Security training results are reported to the board.",
    ),
    _fact(
        20,
        "Data residency",
        "policies",
        "Customer data for European accounts stays in the Frankfurt and Dublin regions.",
        "Which regions hold customer data for European accounts?",
        "Customer data for other accounts stays in the Virginia region.",
    ),
)

_FILLER_TEXT = """
alpha amber anchor apple arch arrow atlas autumn bamboo banner basket beacon bench birch blanket blossom
bottle breeze bridge bronze bubble cabin cactus candle canvas canyon carpet castle cedar chalk cherry chimney
cinder circle cliff clover cobalt comet copper coral cotton crystal dahlia delta desert diamond dune ember
engine fable falcon feather fern festival fiber flint forest fountain garden garnet glacier granite harbor
harvest hazel helmet hollow honey horizon island ivory jasmine jungle kettle lagoon lantern lattice lemon
lilac linen lotus maple marble meadow melody mesa mint mosaic moss nectar nickel oasis olive onyx orchard
paddle palace pebble pepper pigment pillar pine planet plume poplar prairie prism quartz quill rainbow raven
reef ribbon ridge river saddle saffron sapphire scarlet shadow shell silk silver slate spruce summit sunset
tangle temple thistle thunder timber topaz tulip tundra umber valley velvet violet walnut willow window
winter zephyr compile gather observe balance measure sketch wander polish fold carry weave glimmer
"""
_FILLER_WORDS = tuple(_FILLER_TEXT.split())


def _filler_vocabulary() -> list[str]:
    fact_tokens: set[str] = set()
    for f in FACTS:
        fact_tokens |= tokens(" ".join((f.title, f.sentence, f.extra, f.question)))
    return [w for w in _FILLER_WORDS if not (tokens(w) & fact_tokens)]


def corpus_docs(docs: int = 200, seed: int = 1) -> list[Doc]:
    """The corpus as data: the first min(docs, 20) fact documents, then seeded filler."""
    out = [Doc(f.id, f.title, f"{f.sentence} {f.extra}", f.source) for f in FACTS[:docs]]
    vocab = _filler_vocabulary()
    rng = random.Random(seed)
    for n in range(len(out) + 1, docs + 1):
        title = " ".join(rng.sample(vocab, 3)).capitalize()
        body = " ".join(
            " ".join(rng.choices(vocab, k=rng.randint(8, 14))).capitalize() + "." for _ in range(rng.randint(3, 5))
        )
        out.append(Doc(f"doc-{n:04d}", title, body, rng.choice(SOURCES)))
    return out


def golden() -> list[dict[str, Any]]:
    """The golden set as data (tests/data/golden.yaml holds the same)."""
    return [
        {"id": f"q{n:02d}", "question": f.question, "ground_truth": f.sentence, "sources": [f.id]}
        for n, f in enumerate(FACTS, 1)
    ]


async def create_corpus(dsn: str, *, docs: int = 200, seed: int = 1, conversations: int = 25) -> dict[str, int]:
    """Create the schema and load the deterministic corpus; returns per-table row counts."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(SCHEMA)
            await conn.executemany(
                "INSERT INTO docs (id, title, body, source) VALUES ($1, $2, $3, $4)",
                [(d.id, d.title, d.body, d.source) for d in corpus_docs(docs, seed)],
            )
            await conn.execute("INSERT INTO chunks (doc_id, ord, text) SELECT id, 0, body FROM docs ORDER BY id")
            history = [(f.question, f.sentence) for f in FACTS]
            await conn.executemany(
                "INSERT INTO conversations (question, answer) VALUES ($1, $2)",
                [history[i % len(history)] for i in range(conversations)],
            )
        await conn.execute("ANALYZE")
        return await _counts(conn)
    finally:
        await conn.close()


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        t: int(await conn.fetchval(f"SELECT count(*) FROM {t}"))
        for t in ("docs", "chunks", "conversations", "schema_version")
    }


async def table_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await _counts(conn)
    finally:
        await conn.close()


async def change_corpus(
    dsn: str,
    *,
    delete: Sequence[str] | None = None,
    rewrite: Sequence[str] | None = None,
    junk: int = 40,
    seed: int = 2,
) -> dict[str, Any]:
    """What a bad deploy does to the data: delete documents (default 5 fact + 5 filler), rewrite others'
    bodies with nonsense (default 5 fact + 5 filler), add `junk` documents from an undeclared source, migrate
    the schema (docs.lang, schema_version 2). Conversations are untouched. Returns what changed."""
    delete = list(delete if delete is not None else [f"doc-{n:04d}" for n in (*range(1, 6), *range(101, 106))])
    rewrite = list(rewrite if rewrite is not None else [f"doc-{n:04d}" for n in (*range(6, 11), *range(106, 111))])
    rng = random.Random(seed)
    vocab = _filler_vocabulary()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            deleted = await conn.fetch("DELETE FROM docs WHERE id = ANY($1::text[]) RETURNING id", delete)
            await conn.execute("DELETE FROM chunks WHERE doc_id = ANY($1::text[])", delete)
            await conn.executemany(
                "UPDATE docs SET body = $2, updated_at = now() WHERE id = $1",
                [(i, " ".join(rng.choices(vocab, k=20)).capitalize() + ".") for i in rewrite],
            )
            await conn.executemany(
                "INSERT INTO docs (id, title, body, source) VALUES ($1, $2, $3, $4)",
                [
                    (f"junk-{n:04d}", "Scraped page", " ".join(rng.choices(vocab, k=30)) + ".", JUNK_SOURCE)
                    for n in range(1, junk + 1)
                ],
            )
            await conn.execute("ALTER TABLE docs ADD COLUMN IF NOT EXISTS lang text")
            await conn.execute("UPDATE schema_version SET version = 2")
        return {
            "deleted": sorted(r["id"] for r in deleted),
            "rewritten": rewrite,
            "junk": junk,
            "schema_version": 2,
            "counts": await _counts(conn),
        }
    finally:
        await conn.close()


async def generate_large(dsn: str, target_mb: int = 250, *, batch_rows: int = 50_000) -> int:
    """Grow `chunks` (hex text, about 2:1 compressible) inside Postgres until the database reaches
    `target_mb`; returns the database size in bytes."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        target = target_mb * 1024 * 1024
        start = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM chunks")) + 1
        size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        while size < target:
            await conn.execute(
                "INSERT INTO chunks (doc_id, ord, text) "
                "SELECT 'bulk-' || (g / 100), g % 100, "
                "md5(g::text) || md5((g + 1)::text) || md5((g * 3)::text) || md5((g * 7)::text) "
                "|| md5((g * 11)::text) || md5((g * 13)::text) || md5((g * 17)::text) || md5((g * 19)::text) "
                "FROM generate_series($1::bigint, $2::bigint) g",
                start,
                start + batch_rows - 1,
            )
            start += batch_rows
            size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        return size
    finally:
        await conn.close()


def point_vector(key: str, dim: int, seed: int = 1) -> list[float]:
    """A deterministic unit vector for `key`."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    v = rng.standard_normal(dim)
    return [float(x) for x in v / np.linalg.norm(v)]


async def load_points(
    qdrant_url: str,
    collection: str,
    *,
    dsn: str | None = None,
    dim: int = 64,
    count: int | None = None,
    seed: int = 1,
    alias: str | None = None,
    batch: int = 256,
    api_key: str | None = None,
) -> int:
    """Create `collection` (cosine, `dim`) and upsert one point per document of `dsn` (payload doc_id,
    title, source), or `count` synthetic points without a DSN; optionally point `alias` at it. Returns the
    collection's points_count."""
    from qdrant_client import AsyncQdrantClient, models

    if dsn is not None:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT id, title, source FROM docs ORDER BY id")
        finally:
            await conn.close()
        payloads = [{"doc_id": r["id"], "title": r["title"], "source": r["source"]} for r in rows][:count]
    else:
        payloads = [{"doc_id": f"synthetic-{n}", "title": "", "source": ""} for n in range(count or 0)]
    client = AsyncQdrantClient(url=qdrant_url, api_key=api_key, timeout=30, check_compatibility=False)
    try:
        await client.create_collection(
            collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
        )
        for lo in range(0, len(payloads), batch):
            points = [
                models.PointStruct(id=lo + i + 1, vector=point_vector(p["doc_id"], dim, seed), payload=p)
                for i, p in enumerate(payloads[lo : lo + batch])
            ]
            await client.upsert(collection, points=points, wait=True)
        if alias:
            await client.update_collection_aliases(
                change_aliases_operations=[
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
                    )
                ]
            )
        info = await client.get_collection(collection)
        return int(info.points_count or 0)
    finally:
        await client.close()
