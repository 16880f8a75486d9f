"""/v1/snapshots: list, create, verify, restore (with dry_run), prune, adopt-alias. Every write is journaled
with who asked (the token's name) and why. A restore here is the two-phase operation run directly
(safety snapshot -> prepare all stores -> swap all), refused while an incident of the service runs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field

from rollbackd.api.keys import CORE
from rollbackd.api.openapi import op
from rollbackd.api.problems import problem
from rollbackd.api.v1 import ACTOR, body_of, query_service
from rollbackd.errors import ConfigError, NotFoundError, PayloadError, RollbackdError
from rollbackd.reasons import EventKind
from rollbackd.records import JSON, Event
from rollbackd.snapshots.dataset import DataSet
from rollbackd.snapshots.manual import open_restore
from rollbackd.snapshots.plugin import parse
from rollbackd.snapshots.retention import kept_copies, prune
from rollbackd.wiring import Core

Reason_ = Annotated[str, Field(min_length=1, max_length=500)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str | None = None


class SnapshotCreateBody(_Body):
    reason: Reason_ = "manual snapshot"
    background: bool = False  # answer 202 with a job to follow (GET /v1/snapshots/jobs/{id}) at once


class SnapshotVerifyBody(_Body):
    pass


class SnapshotRestoreBody(_Body):
    reason: Reason_
    dry_run: bool = False
    allow_foreign: str | None = None  # the service a set of another service/database/server was taken of


class SnapshotPruneBody(_Body):
    reason: Reason_ = "manual prune"
    dry_run: bool = False


class AdoptAliasBody(_Body):
    reason: Reason_
    store: str | None = None


def _dataset(core: Core, service: str | None) -> DataSet:
    runtime = core.controls.service(service)
    data = runtime.caps.snapshots
    if not isinstance(data, DataSet):
        raise PayloadError("service", f"service {runtime.name} has no `snapshots:` configured")
    return data


async def _journal(core: Core, kind: EventKind, data: DataSet, actor: str, why: str, **fields: Any) -> None:
    await core.store.append_event(Event(kind=kind, service=data.service, actor=actor, data={"why": why, **fields}))


async def list_snapshots(request: web.Request) -> web.Response:
    data = _dataset(request.app[CORE], query_service(request))
    return web.json_response(
        {
            "service": data.service,
            "snapshots": [s.to_json() for s in await data.list()],
            "kept_copies": await kept_copies(data),
        }
    )


async def create_snapshot(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await body_of(request, SnapshotCreateBody)
    data = _dataset(core, body.service)
    actor = request[ACTOR]

    async def create() -> JSON:
        snap = await data.create(reason=body.reason)
        await _journal(core, EventKind.SNAPSHOT, data, actor, body.reason, snapshot_set=snap.id)
        return snap.to_json()

    if body.background and data.jobs is not None:
        return web.json_response(await data.jobs.start("snapshot", create(), actor=actor, why=body.reason), status=202)
    return web.json_response(await create(), status=201)


async def get_job(request: web.Request) -> web.Response:
    data = _dataset(request.app[CORE], query_service(request))
    if data.jobs is None:
        raise NotFoundError("this daemon runs no snapshot jobs")
    return web.json_response(await data.jobs.get(request.match_info["id"]))


async def verify_snapshot(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await body_of(request, SnapshotVerifyBody)
    data = _dataset(core, body.service)
    result = await data.verify(request.match_info["id"])
    await _journal(core, EventKind.SNAPSHOT_VERIFY, data, request[ACTOR], "verify", **result)
    return web.json_response(result)


async def restore_plan(data: DataSet, set_id: str) -> JSON:
    """What a restore would do and replace (the dry run, and the CLI's question)."""
    snap = await data.get(set_id)
    live = await data.live()
    replaces: dict[str, JSON] = {}
    for name, now in live.items():
        then = snap.manifests.get(name, {})
        if now.get("kind") == "postgres":
            replaces[name] = {
                "database": now["database"],
                "bytes": now["bytes"],
                "schema_version": {"live": now.get("schema_version"), "snapshot": then.get("schema_version")},
                "tables": {
                    t: {
                        "live": (now["tables"].get(t) or {}).get("rows"),
                        "snapshot": (then.get("tables", {}).get(t) or {}).get("rows"),
                    }
                    for t in sorted(set(now["tables"]) | set(then.get("tables", {})))
                },
            }
        else:
            alias = now.get("alias")
            replaces[name] = {
                "alias": alias,
                "collection": now.get("collection"),
                "points": {
                    "live": now["collections"][alias]["points"],
                    "snapshot": then.get("collections", {}).get(alias, {}).get("points"),
                },
            }
    return {
        "service": data.service,
        "snapshot": snap.to_json(),
        "replaces": replaces,
        "steps": (["safety snapshot of the live data"] if data.safety_snapshot else [])
        + [
            "restore every store aside (parallel), counts checked",
            "swap all stores (database rename, alias switch); replaced copies kept",
        ],
    }


async def restore_snapshot(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await body_of(request, SnapshotRestoreBody)
    data = _dataset(core, body.service)
    set_id = request.match_info["id"]
    plan = await restore_plan(data, set_id)
    if body.dry_run:
        return web.json_response({"dry_run": True, **plan})
    incident = await open_restore(
        core, data, set_id, actor=request[ACTOR], reason=body.reason, allow_foreign=body.allow_foreign
    )
    return web.json_response(
        {
            "incident": incident.id,
            "service": data.service,
            "snapshot_set": set_id,
            "state": incident.state.value,
            "follow": f"/v1/incidents/{incident.id}",
        },
        status=202,
    )


async def prune_snapshots(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await body_of(request, SnapshotPruneBody)
    data = _dataset(core, body.service)
    runtime = core.services[data.service]
    assert runtime.config.snapshots is not None
    retention = parse(runtime.config.snapshots, f"services.{data.service}.snapshots").retention
    async with data.lock:
        result = await prune(data, keep_last=retention.keep_last, keep_kept=retention.keep_kept, dry_run=body.dry_run)
    if not body.dry_run:
        await _journal(core, EventKind.SNAPSHOT_PRUNE, data, request[ACTOR], body.reason, deleted=result["deleted"])
    return web.json_response(result)


async def adopt_alias(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await body_of(request, AdoptAliasBody)
    data = _dataset(core, body.service)
    qdrant = [n for n, s in data.snapshotters.items() if s.kind == "qdrant" and body.store in (None, n)]
    if not qdrant:
        raise PayloadError("store", "no qdrant store of that name")
    snapshotter: Any = data.snapshotters[qdrant[0]]
    await _journal(
        core,
        EventKind.ALIAS_ADOPT_STARTED,
        data,
        request[ACTOR],
        body.reason,
        store=qdrant[0],
        alias=snapshotter.alias,
        announce=f"reads of {snapshotter.alias!r} fail for a short window",
    )
    async with data.lock:
        with tempfile.TemporaryDirectory(prefix="rollbackd-adopt-") as tmp:
            result = await snapshotter.adopt_alias(Path(tmp))
    await _journal(core, EventKind.ALIAS_ADOPT, data, request[ACTOR], body.reason, store=qdrant[0], **result)
    return web.json_response(result)


def _errors(handler: Handler) -> Handler:
    """A store that fails answers 502 (its message names the store and what failed), never a traceback."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (PayloadError, NotFoundError, ConfigError):
            raise
        except RollbackdError as exc:
            return problem(502, str(exc), retryable=exc.retryable)

    return wrapped


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/snapshots", _errors(list_snapshots))
    app.router.add_post("/v1/snapshots", _errors(create_snapshot))
    app.router.add_post("/v1/snapshots/prune", _errors(prune_snapshots))
    app.router.add_post("/v1/snapshots/adopt-alias", _errors(adopt_alias))
    app.router.add_get("/v1/snapshots/jobs/{id}", _errors(get_job))
    app.router.add_post("/v1/snapshots/{id}/verify", _errors(verify_snapshot))
    app.router.add_post("/v1/snapshots/{id}/restore", _errors(restore_snapshot))


def openapi() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    service = {"name": "service", "in": "query", "schema": {"type": "string"}}
    ident = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/v1/snapshots": {
            "get": op("Snapshot sets of a service, newest first", params=[service]),
            "post": op("Take a snapshot set of every store now", body=SnapshotCreateBody, ok="201"),
        },
        "/v1/snapshots/{id}/verify": {
            "post": op("Re-hash every file against the manifest", body=SnapshotVerifyBody, params=[ident])
        },
        "/v1/snapshots/{id}/restore": {
            "post": op(
                "Restore a set as an incident (safety snapshot, prepare aside, swap; 202, follow the incident); "
                "dry_run: what would be replaced",
                body=SnapshotRestoreBody,
                params=[ident],
            )
        },
        "/v1/snapshots/jobs/{id}": {
            "get": op(
                "A snapshot job (background create): running, done, failed or interrupted, with its result",
                params=[service, ident],
            )
        },
        "/v1/snapshots/prune": {
            "post": op("Apply retention (keep last N and green releases' sets)", body=SnapshotPruneBody)
        },
        "/v1/snapshots/adopt-alias": {
            "post": op("Move a Qdrant collection behind an alias of its name", body=AdoptAliasBody)
        },
    }
    return paths, [SnapshotCreateBody, SnapshotVerifyBody, SnapshotRestoreBody, SnapshotPruneBody, AdoptAliasBody]
