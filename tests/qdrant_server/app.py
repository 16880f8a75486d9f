"""The Qdrant test server: Qdrant's REST API (v1.19) for the endpoints rollbackd uses, on aiohttp.

`create_app(storage_dir, api_key=...)` builds the application. Behaviour follows Qdrant's source
(src/actix/, lib/storage/src/content_manager/): response wrapping, error wording and codes, api-key
checks (401 plain text; `/`, `/healthz`, `/readyz`, `/livez` need no key), alias semantics.
Snapshot endpoints are in snapshot_api.py, the test-only fault hook in faults.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from . import persist
from . import points as pt
from .errors import QdrantError, format_error, service_error, validation_error
from .faults import PREFIX as FAULTS_PREFIX
from .snapshot_api import add_snapshot_routes, cancel_background
from .storage import check_vectors_config, default_config
from .web_util import (
    STATE,
    Handler,
    ServerState,
    check_timeout,
    collection_name,
    error_response,
    ok,
    query_bool,
    read_object,
    require,
    state_of,
)

log = logging.getLogger("qdrant_test_server")

VERSION_INFO = {"title": "qdrant - vector search engine", "version": "1.19.0", "commit": None}
MAX_REQUEST_SIZE = 32 * 1024 * 1024  # Qdrant's service.max_request_size_mb default
_PUBLIC_EXACT = ("/", "/healthz")
_PUBLIC_PREFIX = ("/readyz", "/livez", FAULTS_PREFIX)


@web.middleware
async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await state_of(request).faults.apply(request)
    return response if response is not None else await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = state_of(request).api_key
    path = request.path
    if key is None or path in _PUBLIC_EXACT or path.startswith(_PUBLIC_PREFIX):
        return await handler(request)
    given = request.headers.get("api-key")
    if given is None:
        bearer = request.headers.get("Authorization", "")
        given = bearer[len("Bearer ") :] if bearer.startswith("Bearer ") else None
    if given is None:
        return web.Response(status=401, text="Must provide an API key or an Authorization bearer token")
    if given != key:
        return web.Response(status=401, text="Invalid API key or JWT")
    return await handler(request)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    try:
        return await handler(request)
    except QdrantError as err:
        return error_response(err, started)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return web.Response(status=404)  # actix answers unknown routes with an empty 404
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(service_error(f"{type(exc).__name__}: {exc}"), started)


# --- service ---------------------------------------------------------------------------------------


async def root(request: web.Request) -> web.Response:
    return web.json_response(VERSION_INFO)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="healthz check passed")


async def readyz(request: web.Request) -> web.Response:
    return web.Response(text="all shards are ready")


# --- collections and aliases -------------------------------------------------------------------------


async def list_collections(request: web.Request) -> web.Response:
    started = time.monotonic()
    names = state_of(request).store.collections
    return ok({"collections": [{"name": name} for name in names]}, started)


async def get_collection(request: web.Request) -> web.Response:
    started = time.monotonic()
    return ok(state_of(request).store.get(collection_name(request)).info(), started)


async def collection_exists(request: web.Request) -> web.Response:
    started = time.monotonic()
    return ok({"exists": state_of(request).store.exists(collection_name(request))}, started)


_PARAMS_KEYS = ("shard_number", "replication_factor", "write_consistency_factor", "on_disk_payload")
_DIFF_KEYS = {
    "hnsw_config": "hnsw_config",
    "optimizers_config": "optimizer_config",
    "wal_config": "wal_config",
}


def _config_from_request(body: Mapping[str, Any]) -> dict[str, Any]:
    if body.get("sparse_vectors"):
        raise QdrantError(400, "Bad request: the Qdrant test server does not support sparse vectors")
    config = default_config(check_vectors_config(body.get("vectors")))
    for key in _PARAMS_KEYS:
        if body.get(key) is not None:
            config["params"][key] = body[key]
    for key, target in _DIFF_KEYS.items():
        if isinstance(body.get(key), Mapping):
            config[target].update({k: v for k, v in body[key].items() if v is not None})
    for key in ("quantization_config", "metadata"):
        if body.get(key) is not None:
            config[key] = body[key]
    return config


async def create_collection(request: web.Request) -> web.Response:
    started = time.monotonic()
    name = collection_name(request, strict=True)
    check_timeout(request)
    config = _config_from_request(await read_object(request, "CreateCollection"))
    state = state_of(request)
    async with state.meta_lock:
        state.store.create_collection(name, config)
    return ok(True, started)


async def delete_collection(request: web.Request) -> web.Response:
    started = time.monotonic()
    name = collection_name(request)
    check_timeout(request)
    state = state_of(request)
    async with state.meta_lock:
        return ok(state.store.delete_collection(name), started)


_ALIAS_FIELDS = {
    "create_alias": ("collection_name", "alias_name"),
    "delete_alias": ("alias_name",),
    "rename_alias": ("old_alias_name", "new_alias_name"),
}


def _check_alias_action(action: object) -> None:
    for kind, fields in _ALIAS_FIELDS.items():
        if (
            isinstance(action, dict)
            and isinstance(action.get(kind), dict)
            and all(isinstance(action[kind].get(f), str) for f in fields)
        ):
            return
    raise format_error("JSON body", "data did not match any variant of untagged enum AliasOperations")


async def update_aliases(request: web.Request) -> web.Response:
    started = time.monotonic()
    check_timeout(request)
    body = await read_object(request, "ChangeAliasesOperation")
    actions = require(body, "actions", list, "a sequence")
    for action in actions:
        _check_alias_action(action)
    state = state_of(request)
    async with state.meta_lock:
        state.store.update_aliases(actions)
    return ok(True, started)


async def collection_aliases(request: web.Request) -> web.Response:
    started = time.monotonic()
    return ok({"aliases": state_of(request).store.collection_aliases(collection_name(request))}, started)


async def all_aliases(request: web.Request) -> web.Response:
    started = time.monotonic()
    return ok({"aliases": state_of(request).store.all_aliases()}, started)


# --- points ----------------------------------------------------------------------------------------

_NO_VARIANT = "data did not match any variant of untagged enum PointInsertOperations"


def _upsert_items(body: Mapping[str, Any]) -> list[tuple[object, object, object]]:
    if "points" in body:
        points = body["points"]
        if not isinstance(points, list) or not all(isinstance(p, dict) and "id" in p for p in points):
            raise format_error("JSON body", _NO_VARIANT)
        missing = [p for p in points if "vector" not in p]
        if missing:
            raise format_error("JSON body", "missing field `vector`")
        return [(p["id"], p["vector"], p.get("payload")) for p in points]
    batch = body.get("batch")
    if not isinstance(batch, dict) or not isinstance(batch.get("ids"), list):
        raise format_error("JSON body", _NO_VARIANT)
    ids, vectors = batch["ids"], batch.get("vectors")
    payloads = batch.get("payloads") or [None] * len(ids)
    if not isinstance(vectors, list) or len(vectors) != len(ids) or len(payloads) != len(ids):
        raise QdrantError(400, "Wrong input: Batch ids, vectors and payloads must have the same length")
    return list(zip(ids, vectors, payloads, strict=True))


async def upsert_points(request: web.Request) -> web.Response:
    started = time.monotonic()
    name = collection_name(request)
    wait = query_bool(request, "wait", False)
    check_timeout(request)
    if request.query.get("ordering", "weak") not in ("weak", "medium", "strong"):
        raise format_error("query parameters", "ordering: unknown variant, expected `weak`, `medium`, `strong`")
    body = await read_object(request, "PointInsertOperations")
    collection = state_of(request).store.get(name)
    if body.get("update_filter") is not None:
        raise QdrantError(400, "Bad request: the Qdrant test server does not support update_filter")
    mode = body.get("update_mode") or "upsert"
    if mode not in ("upsert", "insert_only", "update_only"):
        raise format_error(
            "JSON body", f"unknown variant `{mode}`, expected one of `upsert`, `insert_only`, `update_only`"
        )
    operation_id = collection.upsert(_upsert_items(body), mode)
    return ok({"operation_id": operation_id, "status": "completed" if wait else "acknowledged"}, started)


async def count_points(request: web.Request) -> web.Response:
    started = time.monotonic()
    name = collection_name(request)
    check_timeout(request)
    body = await read_object(request, "CountRequest")
    flt = pt.check_filter(body.get("filter"))
    if not isinstance(body.get("exact", True), bool):
        raise format_error("JSON body", "invalid type for `exact`, expected a boolean")
    return ok({"count": state_of(request).store.get(name).count(flt)}, started)


async def scroll_points(request: web.Request) -> web.Response:
    started = time.monotonic()
    name = collection_name(request)
    check_timeout(request)
    body = await read_object(request, "ScrollRequest")
    limit = body.get("limit")
    limit = 10 if limit is None else limit
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise format_error("JSON body", f"invalid value: `{limit}`, expected usize")
    if limit < 1:
        raise validation_error("JSON body", "limit", "value 0 invalid, must be 1 or larger")
    if body.get("order_by") is not None:
        raise QdrantError(400, "Bad request: the Qdrant test server does not support order_by")
    offset = body.get("offset")
    offset = None if offset is None else pt.parse_point_id(offset)
    flt = pt.check_filter(body.get("filter"))
    collection = state_of(request).store.get(name)
    with_payload = body.get("with_payload", True)
    return ok(collection.scroll(offset, limit, flt, with_payload, body.get("with_vector", False)), started)


# --- application -----------------------------------------------------------------------------------


def _add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", root)
    r.add_get("/healthz", healthz)
    r.add_get("/livez", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/collections", list_collections)
    r.add_post("/collections/aliases", update_aliases)
    r.add_get("/aliases", all_aliases)
    r.add_get("/collections/{collection_name}", get_collection)
    r.add_put("/collections/{collection_name}", create_collection)
    r.add_delete("/collections/{collection_name}", delete_collection)
    r.add_get("/collections/{collection_name}/exists", collection_exists)
    r.add_get("/collections/{collection_name}/aliases", collection_aliases)
    r.add_put("/collections/{collection_name}/points", upsert_points)
    r.add_post("/collections/{collection_name}/points/count", count_points)
    r.add_post("/collections/{collection_name}/points/scroll", scroll_points)
    add_snapshot_routes(app)


async def _load(app: web.Application) -> None:
    state = app[STATE]
    await asyncio.to_thread(persist.load, state.store, state.data_dir)


async def _save(app: web.Application) -> None:
    state = app[STATE]
    await cancel_background(app)
    store = state.store
    data = {name: (c.config, c.copy_data()) for name, c in store.collections.items()}
    await asyncio.to_thread(persist.save, data, dict(store.aliases), state.data_dir, state.temp_dir)


def create_app(storage_dir: Path, *, api_key: str | None = None) -> web.Application:
    """The Qdrant test server; state persists in `storage_dir` across graceful restarts."""
    storage_dir = Path(storage_dir).resolve()
    storage_dir.mkdir(parents=True, exist_ok=True)
    state = ServerState(storage_dir=storage_dir, api_key=api_key, peer_id=persist.peer_id(storage_dir))
    state.snapshots_dir.mkdir(exist_ok=True)
    app = web.Application(
        middlewares=[faults_middleware, auth_middleware, errors_middleware], client_max_size=MAX_REQUEST_SIZE
    )
    app[STATE] = state
    _add_routes(app)
    state.faults.add_routes(app)
    app.on_startup.append(_load)
    app.on_cleanup.append(_save)
    return app
