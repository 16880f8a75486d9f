"""Shared state and request/response helpers of the Qdrant test server's handlers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .errors import QdrantError, format_error, validation_error
from .faults import Faults
from .storage import Store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Characters Qdrant refuses in a new collection's name (lib/common/common/src/validation.rs).
INVALID_NAME_CHARS = '<>:"/\\|?*\0\x1f'


@dataclass
class ServerState:
    storage_dir: Path
    api_key: str | None
    peer_id: int
    store: Store = field(default_factory=Store)
    faults: Faults = field(default_factory=Faults)
    meta_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def snapshots_dir(self) -> Path:
        return self.storage_dir / "snapshots"

    @property
    def temp_dir(self) -> Path:
        return self.storage_dir / "tmp"

    @property
    def data_dir(self) -> Path:
        return self.storage_dir / "storage"


STATE = web.AppKey("qdrant_test_server_state", ServerState)


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE]


def _dumps(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def ok(result: object, started: float) -> web.Response:
    return web.json_response({"result": result, "status": "ok", "time": time.monotonic() - started}, dumps=_dumps)


def accepted(started: float) -> web.Response:
    return web.json_response({"status": "accepted", "time": time.monotonic() - started}, status=202)


def error_response(err: QdrantError, started: float) -> web.Response:
    return web.json_response(
        {"status": {"error": err.message}, "time": time.monotonic() - started}, status=err.status, dumps=_dumps
    )


async def read_json(request: web.Request) -> Any:
    """The JSON body, refused as actix-web-validator's Json extractor refuses it."""
    ctype = request.headers.get("Content-Type", "application/json")
    if "json" not in ctype:
        raise QdrantError(400, "Content type error")
    raw = await request.read()
    if not raw.strip():
        raise format_error("JSON body", "EOF while parsing a value at line 1 column 0")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise format_error("JSON body", str(exc)) from None


async def read_object(request: web.Request, type_name: str) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise format_error("JSON body", f"invalid type: expected struct {type_name}")
    return body


def require(body: dict[str, Any], name: str, kind: type | tuple[type, ...], type_name: str) -> Any:
    if name not in body:
        raise format_error("JSON body", f"missing field `{name}`")
    value = body[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise format_error("JSON body", f"invalid type for `{name}`, expected {type_name}")
    return value


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw in ("true", "false"):
        return raw == "true"
    raise format_error("query parameters", f"{name}: provided string was not `true` or `false`")


def check_timeout(request: web.Request) -> None:
    raw = request.query.get("timeout")
    if raw is None:
        return
    if not raw.isdigit():
        raise format_error("query parameters", "timeout: invalid digit found in string")
    if int(raw) < 1:
        raise validation_error("query parameters", "timeout", f"value {raw} invalid, must be 1 or larger")


def collection_name(request: web.Request, *, strict: bool = False) -> str:
    """The `{collection_name}` path parameter, validated as Qdrant's (Strict)CollectionPath does."""
    name = request.match_info["collection_name"]
    if not 1 <= len(name) <= 255:
        raise validation_error("path parameters", "collection_name", "must be from 1 to 255 characters")
    bad = [c for c in (INVALID_NAME_CHARS if strict else "/\0") if c in name]
    if bad:
        raise validation_error("path parameters", "collection_name", f'collection name cannot contain "{bad[0]}" char')
    return name
