"""Qdrant calls for the snapshot backend: qdrant-client (AsyncQdrantClient) for what it has, plain aiohttp
for snapshot download and upload (the client has neither). Every failure becomes a BackendError naming the
endpoint and Qdrant's message; 5xx, timeouts and refused connections are retryable, 4xx are not."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from rollbackd.errors import BackendError

T = TypeVar("T")
_CHUNK = 1 << 20


def _message(content: bytes | str | None) -> str:
    if not content:
        return ""
    text = content.decode(errors="replace") if isinstance(content, bytes) else content
    try:
        body = json.loads(text)
        status = body.get("status") if isinstance(body, dict) else None
        if isinstance(status, dict) and status.get("error"):
            return str(status["error"])
    except ValueError:
        pass
    return text[:300]


class QdrantHttp:
    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from qdrant_client import AsyncQdrantClient

            with warnings.catch_warnings():  # "api key over http": the operator's choice, named in the docs
                warnings.filterwarnings("ignore", "Api key is used with an insecure connection")
                self._client = AsyncQdrantClient(
                    url=self.url,
                    api_key=self.api_key,
                    timeout=int(self.timeout),
                    prefer_grpc=False,
                    check_compatibility=False,
                )
        return self._client

    async def _call(self, endpoint: str, work: Awaitable[T]) -> T:
        import httpx
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            return await work
        except UnexpectedResponse as exc:
            code = exc.status_code or 0
            raise BackendError(
                "qdrant", f"{endpoint}: {code} {_message(exc.content) or exc.reason_phrase}", retryable=code >= 500
            ) from exc
        except ResponseHandlingException as exc:
            raise BackendError("qdrant", f"{endpoint}: {exc.source!r}", retryable=True) from exc
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            raise BackendError("qdrant", f"{endpoint}: {type(exc).__name__}: {exc}", retryable=True) from exc

    # ---- qdrant-client ----------------------------------------------------------------------------
    async def aliases(self) -> list[dict[str, str]]:
        resp = await self._call("GET /aliases", self.client.get_aliases())
        return [{"alias_name": a.alias_name, "collection_name": a.collection_name} for a in resp.aliases]

    async def collections(self) -> list[str]:
        resp = await self._call("GET /collections", self.client.get_collections())
        return [c.name for c in resp.collections]

    async def exists(self, name: str) -> bool:
        return bool(await self._call(f"GET /collections/{name}/exists", self.client.collection_exists(name)))

    async def points(self, name: str) -> int:
        info = await self._call(f"GET /collections/{name}", self.client.get_collection(name))
        return int(info.points_count or 0)

    async def create_snapshot(self, collection: str) -> dict[str, Any]:
        desc = await self._call(
            f"POST /collections/{collection}/snapshots", self.client.create_snapshot(collection, wait=True)
        )
        if desc is None:
            raise BackendError("qdrant", f"POST /collections/{collection}/snapshots: no snapshot description")
        return {"name": desc.name, "checksum": desc.checksum, "size": desc.size}

    async def delete_snapshot(self, collection: str, name: str) -> None:
        await self._call(
            f"DELETE /collections/{collection}/snapshots/{name}",
            self.client.delete_snapshot(collection, name, wait=True),
        )

    async def recover(self, collection: str, location: str, checksum: str) -> None:
        """The node fetches ``location`` itself; priority snapshot, checksum checked before anything changes."""
        from qdrant_client import models

        await self._call(
            f"PUT /collections/{collection}/snapshots/recover",
            self.client.recover_snapshot(
                collection, location=location, checksum=checksum, priority=models.SnapshotPriority.SNAPSHOT, wait=True
            ),
        )

    async def delete_collection(self, name: str) -> None:
        await self._call(f"DELETE /collections/{name}", self.client.delete_collection(name))

    async def point_alias(self, alias: str, collection: str) -> None:
        """ONE create_alias: re-points an existing alias atomically (readers see old or new, never none)."""
        await self.update_aliases({alias: collection})

    async def update_aliases(self, point: dict[str, str], delete: tuple[str, ...] = ()) -> None:
        """One request: every alias of ``point`` (re)pointed at its collection, then ``delete`` removed. A
        create_alias re-points in place, so readers of each alias see the old collection or the new one."""
        from qdrant_client import models

        ops: list[Any] = [
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))
            for alias, collection in point.items()
        ]
        ops += [models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)) for alias in delete]
        await self._call(
            "POST /collections/aliases", self.client.update_collection_aliases(change_aliases_operations=ops)
        )

    async def holders(self, collection: str) -> list[str]:
        """The aliases pointing at ``collection`` now, asked of the server (sorted)."""
        return sorted(a["alias_name"] for a in await self.aliases() if a["collection_name"] == collection)

    # ---- plain HTTP -------------------------------------------------------------------------------
    def _session(self) -> Any:
        import aiohttp

        headers = {"api-key": self.api_key} if self.api_key else {}
        return aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(self.timeout, 30.0), sock_read=self.timeout),
        )

    async def _http(self, endpoint: str, work: Awaitable[T]) -> T:
        import aiohttp

        try:
            return await work
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise BackendError("qdrant", f"{endpoint}: {type(exc).__name__}: {exc}", retryable=True) from exc

    async def download(self, collection: str, name: str, target: Path) -> tuple[str, int]:
        """Stream a snapshot into ``target``; returns (sha256, bytes)."""
        path = f"/collections/{quote(collection)}/snapshots/{quote(name)}"

        async def work() -> tuple[str, int]:
            digest, size = hashlib.sha256(), 0
            async with self._session() as session, session.get(self.url + path) as resp:
                if resp.status >= 300:
                    raise BackendError(
                        "qdrant",
                        f"GET {path}: {resp.status} {_message(await resp.read())}",
                        retryable=resp.status >= 500,
                    )
                with target.open("wb") as fh:
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        fh.write(chunk)
            return digest.hexdigest(), size

        return await self._http(f"GET {path}", work())

    async def upload(self, collection: str, source: Path, checksum: str) -> None:
        """Upload a snapshot into ``collection`` (created if missing) with priority snapshot and the checksum:
        Qdrant refuses a file whose sha256 differs before anything changes."""
        import aiohttp

        path = f"/collections/{quote(collection)}/snapshots/upload"

        async def work() -> None:
            async with self._session() as session:
                with source.open("rb") as fh:
                    form = aiohttp.FormData()
                    form.add_field("snapshot", fh, filename=source.name, content_type="application/octet-stream")
                    params = {"priority": "snapshot", "checksum": checksum, "wait": "true"}
                    async with session.post(self.url + path, data=form, params=params) as resp:
                        if resp.status >= 300:
                            raise BackendError(
                                "qdrant",
                                f"POST {path}: {resp.status} {_message(await resp.read())}",
                                retryable=resp.status >= 500,
                            )

        await self._http(f"POST {path}", work())

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
