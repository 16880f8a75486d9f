"""Postgres (documents, conversations) and Qdrant (collection info through the alias) access.

The pool connects lazily and survives a database swap: a connection the swap terminated is expired and the
query retried once, so after `ALTER DATABASE ... RENAME` the service reads the restored database by name.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg

from .retrieval import Doc, raw_tokens, tokens
from .settings import Settings

_CONNECTION_LOST = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin_shutdown: pg_terminate_backend
    asyncpg.exceptions.InterfaceError,
    OSError,
)


class Unavailable(Exception):
    """A dependency could not answer; the message says which and why."""


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        if self.settings.pg_dsn:
            self._pool = asyncpg.create_pool(
                self.settings.pg_dsn,
                min_size=0,
                max_size=4,
                max_inactive_connection_lifetime=30,
                timeout=3,
                command_timeout=10,
            )
            await self._pool  # min_size=0: connects nothing yet

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
        if self._http is not None:
            await self._http.close()

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        if self._pool is None:
            raise Unavailable("postgres: RAG_PG_DSN is not set")
        for attempt in (1, 2):
            try:
                return list(await self._pool.fetch(query, *args))
            except _CONNECTION_LOST as exc:
                if attempt == 2:
                    raise Unavailable(f"postgres: {exc!r}") from exc
                await self._pool.expire_connections()
            except (asyncpg.PostgresError, TimeoutError) as exc:  # e.g. the database does not exist
                raise Unavailable(f"postgres: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def ping_postgres(self) -> None:
        await self._fetch("SELECT 1")

    async def candidates(self, question: str, *, limit: int = 200) -> list[Doc]:
        """Documents containing any of the question's words (a GIN-indexed prefilter)."""
        words = sorted(set(raw_tokens(question)) | tokens(question))
        if not words:
            return []
        rows = await self._fetch(
            "SELECT id, title, body, source FROM docs "
            "WHERE to_tsvector('simple', title || ' ' || body) @@ to_tsquery('simple', $1) "
            "ORDER BY id LIMIT $2",
            " | ".join(words),
            limit,
        )
        return [Doc(r["id"], r["title"], r["body"], r["source"]) for r in rows]

    async def some_docs(self, k: int) -> list[Doc]:
        rows = await self._fetch("SELECT id, title, body, source FROM docs ORDER BY id LIMIT $1", k)
        return [Doc(r["id"], r["title"], r["body"], r["source"]) for r in rows]

    async def first_sentences(self, limit: int = 50) -> list[str]:
        rows = await self._fetch("SELECT split_part(body, '. ', 1) AS s FROM docs ORDER BY id LIMIT $1", limit)
        return [str(r["s"]) for r in rows]

    async def sources(self) -> list[str]:
        return [str(r["source"]) for r in await self._fetch("SELECT DISTINCT source FROM docs ORDER BY 1")]

    async def record(self, question: str, answer: str) -> None:
        await self._fetch("INSERT INTO conversations (question, answer) VALUES ($1, $2)", question, answer)

    async def qdrant_points(self) -> int:
        """points_count of the configured collection (an alias resolves like a name)."""
        s = self.settings
        if not s.qdrant_url:
            raise Unavailable("qdrant: RAG_QDRANT_URL is not set")
        assert self._http is not None
        headers = {"api-key": s.qdrant_api_key} if s.qdrant_api_key else {}
        url = f"{s.qdrant_url}/collections/{s.qdrant_collection}"
        try:
            async with self._http.get(url, headers=headers) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise Unavailable(f"qdrant: HTTP {resp.status} for {s.qdrant_collection!r}: {body}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"qdrant: {exc!r}") from exc
        return int((body.get("result") or {}).get("points_count") or 0)
