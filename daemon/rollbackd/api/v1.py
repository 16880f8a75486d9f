"""/v1 routes for the CLI and pipelines. Bodies are validated with pydantic (errors name the field);
every write is journaled with who asked (the API token's name) and why (``reason``)."""

from __future__ import annotations

import time
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rollbackd import status
from rollbackd.alertmanager import loads_strict
from rollbackd.api.keys import CORE
from rollbackd.api.webhook import read_limited
from rollbackd.config import Duration
from rollbackd.errors import NotFoundError, PayloadError
from rollbackd.registry import format_loc

ACTOR = web.RequestKey("actor", str)  # the API token's name: who asked
M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriggerBody(_Body):
    service: str | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    dry_run: bool = False
    to_release: str | None = None


class PauseBody(_Body):
    service: str | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    for_: Duration | None = Field(default=None, alias="for")


class ReasonBody(_Body):
    service: str | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "no reason given"


class ResumeBody(ReasonBody):
    all: bool = False  # every service and the global pause


async def body_of(request: web.Request, model: type[M]) -> M:
    raw = await read_limited(request)
    if raw is None:
        raise web.HTTPRequestEntityTooLarge(max_size=1_048_576, actual_size=request.content_length or 0)
    data: Any = loads_strict(raw) if raw.strip() else {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = format_loc(err["loc"]).lstrip(".")
        raise PayloadError(field, err["msg"]) from exc


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise PayloadError(name, f"expected an integer from {low} to {high}, got {raw[:20]!r}")
    return int(raw)


def query_service(request: web.Request) -> str | None:
    name = request.query.get("service")
    if name is not None and name not in request.app[CORE].services:
        raise PayloadError("service", f"unknown service {name!r}")
    return name


async def get_status(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await status.build(core, now=time.time(), update_metrics=True)
    body["started_at"] = core.started_at
    return web.json_response(body)


async def list_incidents(request: web.Request) -> web.Response:
    core = request.app[CORE]
    limit = query_int(request, "limit", 20, 1, 1000)
    incidents = await core.store.list_incidents(query_service(request), limit)
    return web.json_response({"incidents": [status.incident_json(i) for i in incidents]})


async def get_incident(request: web.Request) -> web.Response:
    core = request.app[CORE]
    incident_id = request.match_info["id"]
    incident = await core.store.get_incident(incident_id)
    if incident is None:
        raise NotFoundError(f"no incident {incident_id}")
    body = status.incident_json(incident, await core.store.steps(incident_id))
    events = await core.store.events(incident_id=incident_id, limit=200)
    body["events"] = [
        {"at": e.ts, "kind": e.kind, "reason": e.reason, "verdict": e.verdict, "actor": e.actor, "data": e.data}
        for e in reversed(events)
    ]
    return web.json_response(body)


async def trigger(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await body_of(request, TriggerBody)
    incident = await core.controls.trigger(
        body.service, reason=body.reason, actor=request[ACTOR], dry_run=body.dry_run, to_release=body.to_release
    )
    return web.json_response(status.incident_json(incident), status=202)


async def abort(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await body_of(request, ReasonBody)
    incident = await core.controls.abort(request.match_info["id"], actor=request[ACTOR], reason=body.reason)
    return web.json_response(status.incident_json(incident), status=202)


async def pause(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await body_of(request, PauseBody)
    p = await core.controls.pause(body.service, actor=request[ACTOR], reason=body.reason, duration=body.for_)
    return web.json_response({"paused": status.pause_json(p), "service": p.service})


async def resume(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await body_of(request, ResumeBody)
    cleared = await core.controls.resume(body.service, actor=request[ACTOR], reason=body.reason, every=body.all)
    named = [name for name in cleared if name != "*"]
    shown = "all" if body.all else (named[0] if named else "*")
    return web.json_response({"cleared": sum(cleared.values()), "by_service": cleared, "service": shown})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/incidents", list_incidents)
    app.router.add_get("/v1/incidents/{id}", get_incident)
    app.router.add_post("/v1/incidents/{id}/abort", abort)
    app.router.add_post("/v1/trigger", trigger)
    app.router.add_post("/v1/pause", pause)
    app.router.add_post("/v1/resume", resume)
