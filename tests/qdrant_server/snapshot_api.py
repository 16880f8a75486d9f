"""Collection snapshot endpoints: list, create, download, delete, upload, recover.

Mirrors src/actix/api/snapshot_api.rs and lib/storage/src/content_manager/snapshots/: snapshots of a
collection live in `<storage>/snapshots/<collection>/`; an upload is checked against `checksum` before it
is stored (a mismatch is refused, nothing changes), then saved there under its file name and recovered
like a `file://` location; `file://` locations must lie inside the snapshots directory; `http(s)://`
locations are fetched by the server (with `api-key` when given). Recovery reads the whole file before
it touches the collection: a corrupt file leaves the collection as it was. The target collection is
created from the snapshot's config if missing, else its points are replaced (vector params must agree).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import web

from .errors import (
    QdrantError,
    bad_input,
    bad_request,
    checksum_mismatch,
    forbidden,
    format_error,
    not_found,
    service_error,
    validation_error,
)
from .snapshots import (
    SnapshotReadError,
    checksum_path,
    list_snapshots,
    read_snapshot,
    sha256_file,
    snapshot_name,
    store_file,
    write_snapshot,
)
from .storage import Collection
from .web_util import ServerState, accepted, collection_name, ok, query_bool, read_object, state_of

PRIORITIES = ("no_sync", "snapshot", "replica")
_BACKGROUND = web.AppKey("qdrant_test_server_background", set)
log = logging.getLogger("qdrant_test_server")
_CHUNK = 1 << 20


def _check_priority(value: object, where: str) -> None:
    if value is not None and value not in PRIORITIES:
        expected = ", ".join(f"`{p}`" for p in PRIORITIES)
        raise format_error(where, f"unknown variant `{value}`, expected one of {expected}")


def _check_sha256(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise format_error(where, "invalid type for `checksum`, expected a string")
    if len(value) != 64:
        raise validation_error(
            where,
            "checksum",
            f'Validation error: invalid_sha256_hash [{{"expected_length": 64, "length": {len(value)}}}]',
        )
    if any(c not in "0123456789abcdefABCDEF" for c in value):
        raise validation_error(where, "checksum", "invalid characters, expected 0-9, a-f, A-F")
    return value


async def _time_or_accept(request: web.Request, work: Awaitable[Any], wait: bool) -> web.Response:
    """Qdrant's `time_or_accept`: answer the result, or 202 at once and let the work run on."""
    started = time.monotonic()
    task = asyncio.ensure_future(work)
    background: set[asyncio.Future[Any]] = request.app[_BACKGROUND]
    background.add(task)
    task.add_done_callback(functools.partial(_finished, background, not wait))
    if wait:  # like Qdrant's spawned task, the work goes on if the client gives up waiting
        return ok(await asyncio.shield(task), started)
    return accepted(started)


def _finished(background: set[asyncio.Future[Any]], unanswered: bool, task: asyncio.Future[Any]) -> None:
    background.discard(task)
    if not task.cancelled() and task.exception() is not None and unanswered:
        log.warning("background operation failed: %s", task.exception())


async def cancel_background(app: web.Application) -> None:
    tasks = list(app.get(_BACKGROUND, ()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _snapshot_file(state: ServerState, collection: str, name: str) -> Path:
    if PurePosixPath(name).name != name or name in ("", ".", ".."):
        raise not_found(f"Snapshot {name} not found")
    path = state.snapshots_dir / collection / name
    if not path.is_file():
        raise not_found(f"Snapshot {name} not found")
    return path


# --- list, create, download, delete -----------------------------------------------------------------


async def list_collection_snapshots(request: web.Request) -> web.Response:
    started = time.monotonic()
    state = state_of(request)
    real = state.store.resolve_name(collection_name(request))
    return ok(await asyncio.to_thread(list_snapshots, state.snapshots_dir / real), started)


async def create_snapshot(request: web.Request) -> web.Response:
    name = collection_name(request)
    wait = query_bool(request, "wait", True)
    state = state_of(request)
    collection = state.store.get(name)
    config, data = collection.config, collection.copy_data()
    final = state.snapshots_dir / collection.name / snapshot_name(collection.name, state.peer_id)
    work = asyncio.to_thread(write_snapshot, state.temp_dir, final, config, data)
    return await _time_or_accept(request, work, wait)


async def download_snapshot(request: web.Request) -> web.FileResponse:
    state = state_of(request)
    real = state.store.resolve_name(collection_name(request))
    path = _snapshot_file(state, real, request.match_info["snapshot_name"])
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{path.name}"',
        },
    )


async def delete_snapshot(request: web.Request) -> web.Response:
    name = collection_name(request)
    wait = query_bool(request, "wait", True)
    state = state_of(request)
    path = _snapshot_file(state, state.store.resolve_name(name), request.match_info["snapshot_name"])

    async def work() -> bool:
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
        return True

    return await _time_or_accept(request, work(), wait)


# --- recovery ---------------------------------------------------------------------------------------


async def _recover(state: ServerState, name: str, path: Path) -> bool:
    try:
        config, data = await asyncio.to_thread(read_snapshot, path)
        source = Collection(name, config, data)
    except (SnapshotReadError, ValueError, TypeError, KeyError) as exc:
        raise service_error(str(exc)) from None
    async with state.meta_lock:
        store = state.store
        if store.exists(name):
            store.replace_points(store.resolve_name(name), source)
        else:
            store.create_collection(name, source.config)
            store.collections[name] = source
    return True


async def _spool(chunks: aiohttp.StreamReader | aiohttp.BodyPartReader, target: Path) -> str:
    digest = hashlib.sha256()
    with target.open("wb") as fh:
        while True:
            chunk = await (
                chunks.read_chunk(_CHUNK) if isinstance(chunks, aiohttp.BodyPartReader) else chunks.read(_CHUNK)
            )
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)
            fh.write(chunk)


async def upload_snapshot(request: web.Request) -> web.Response:
    name = collection_name(request, strict=True)
    wait = query_bool(request, "wait", True)
    _check_priority(request.query.get("priority"), "query parameters")
    expected = _check_sha256(request.query.get("checksum"), "query parameters")
    state = state_of(request)
    if not request.content_type.startswith("multipart/"):
        raise QdrantError(400, "Content type error: expected multipart/form-data with a `snapshot` file")
    state.temp_dir.mkdir(parents=True, exist_ok=True)
    spooled = state.temp_dir / f"upload-{uuid.uuid4()}"
    try:
        file_name, actual = None, None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, aiohttp.BodyPartReader) and part.name == "snapshot" and actual is None:
                file_name = PurePosixPath(part.filename or "").name or str(uuid.uuid4())
                actual = await _spool(part, spooled)
            else:
                await part.release()
        if actual is None or file_name is None:
            raise QdrantError(400, "Multipart form error: field `snapshot` is required")
        if expected is not None and actual != expected.lower():
            raise checksum_mismatch(actual, expected)
        stored = state.snapshots_dir / name / file_name
        await asyncio.to_thread(store_file, spooled, stored)
    finally:
        spooled.unlink(missing_ok=True)
    return await _time_or_accept(request, _recover(state, name, stored), wait)


def _local_location(state: ServerState, location: str) -> Path:
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise bad_request("Invalid snapshot URI, file path must be absolute or on localhost")
    path = Path(unquote(parts.path))
    if not path.exists():
        raise bad_request(f'Snapshot file "{path}" does not exist')
    real, allowed = path.resolve(), state.snapshots_dir.resolve()
    if not real.is_relative_to(allowed):
        raise forbidden(f'Snapshot file path must be inside the snapshots directory "{allowed}"')
    return real


async def _download(location: str, api_key: str | None, target: Path) -> str:
    headers = {"api-key": api_key} if api_key else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(location, headers=headers) as response,
        ):
            if response.status >= 300:
                raise bad_input(f"Failed to download tar from {location}: status - {response.status} {response.reason}")
            return await _spool(response.content, target)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise service_error(f"Http request error: {exc or type(exc).__name__}") from None


async def _recover_from_location(state: ServerState, name: str, body: dict[str, Any]) -> bool:
    location: str = body["location"]
    expected = body.get("checksum")
    scheme = urlsplit(location).scheme
    if scheme == "file":
        path = _local_location(state, location)
        if expected is not None:
            actual = await asyncio.to_thread(sha256_file, path)
            if actual != expected.lower():
                raise bad_input(f"Snapshot checksum mismatch: expected {expected}, got {actual}")
        return await _recover(state, name, path)
    state.temp_dir.mkdir(parents=True, exist_ok=True)
    downloaded = state.temp_dir / f"download-{uuid.uuid4()}"
    try:
        actual = await _download(location, body.get("api_key"), downloaded)
        try:  # Qdrant unpacks a download before it compares the checksum
            await asyncio.to_thread(read_snapshot, downloaded)
        except SnapshotReadError as exc:
            raise service_error(f"Failed to unpack tar archive: {exc}") from None
        if expected is not None and actual != expected.lower():
            raise bad_input(f"Snapshot checksum mismatch: expected {expected}, got {actual}")
        return await _recover(state, name, downloaded)
    finally:
        downloaded.unlink(missing_ok=True)


async def recover_snapshot(request: web.Request) -> web.Response:
    name = collection_name(request)
    wait = query_bool(request, "wait", True)
    body = await read_object(request, "SnapshotRecover")
    location = body.get("location")
    if not isinstance(location, str):
        raise format_error(
            "JSON body",
            "missing field `location`" if location is None else "invalid type for `location`, expected a URL string",
        )
    scheme = urlsplit(location).scheme
    if not scheme:
        raise format_error("JSON body", "relative URL without a base")
    _check_priority(body.get("priority"), "JSON body")
    _check_sha256(body.get("checksum"), "JSON body")
    if scheme not in ("file", "http", "https"):
        raise bad_request(f"URL {location} with scheme {scheme} is not supported")
    state = state_of(request)
    return await _time_or_accept(request, _recover_from_location(state, name, body), wait)


def add_snapshot_routes(app: web.Application) -> None:
    app[_BACKGROUND] = set()
    base = "/collections/{collection_name}/snapshots"
    app.router.add_get(base, list_collection_snapshots)
    app.router.add_post(base, create_snapshot)
    app.router.add_post(base + "/upload", upload_snapshot)
    app.router.add_put(base + "/recover", recover_snapshot)
    app.router.add_get(base + "/{snapshot_name}", download_snapshot)
    app.router.add_delete(base + "/{snapshot_name}", delete_snapshot)
