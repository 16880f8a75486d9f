"""API routes of the code capability: releases, green marks, roll-forward, traffic."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from rollbackd import releases, status
from rollbackd.api.keys import CORE
from rollbackd.api.openapi import op
from rollbackd.api.v1 import ACTOR, body_of, query_int
from rollbackd.deploy.ledger import Ledger
from rollbackd.deploy.rollforward import open_rollforward
from rollbackd.errors import PayloadError
from rollbackd.reasons import EventKind
from rollbackd.records import Event
from rollbackd.releases import release_json
from rollbackd.traffic import Weight

Reason = Annotated[str, Field(min_length=1, max_length=500)]
Text = Annotated[str, Field(min_length=1, max_length=300)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _version(value: str) -> str:
    problem = releases.version_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Version = Annotated[str, AfterValidator(_version)]


class ReleaseBody(_Body):
    service: str | None = None
    version: Version
    image: Text | None = None
    digest: Text | None = None
    config_digest: Text | None = None
    schema_version: Text | None = None
    source: Literal["pipeline", "manual"] = "pipeline"
    live_at: float | None = None
    reason: Reason = "recorded by the deploy pipeline"


class GreenBody(_Body):
    service: str | None = None
    reason: Reason


class RollForwardBody(_Body):
    reason: Reason = "roll forward"


class TrafficBody(_Body):
    service: str | None = None
    weight: Weight
    reason: Reason


def _ledger(request: web.Request, service: str | None) -> Ledger:
    runtime = request.app[CORE].controls.service(service)
    ledger: Ledger | None = runtime.caps.releases
    if ledger is None or not runtime.config.releases.track:
        raise PayloadError("service", f"service {runtime.name} does not track releases (releases.track: false)")
    return ledger


async def list_releases(request: web.Request) -> web.Response:
    ledger = _ledger(request, request.query.get("service"))
    body = await ledger.matrix(query_int(request, "limit", 50, 1, 500))
    body["baseline_p95_s"] = await ledger.export_baseline()
    return web.json_response(body)


async def diff_releases(request: web.Request) -> web.Response:
    ledger = _ledger(request, request.query.get("service"))
    a, b = request.query.get("from"), request.query.get("to")
    if not a or not b:
        raise PayloadError("from" if not a else "to", "both `from` and `to` release versions are required")
    return web.json_response({"service": ledger.service, "from": a, "to": b, "changes": await ledger.diff(a, b)})


async def record_release(request: web.Request) -> web.Response:
    body = await body_of(request, ReleaseBody)
    ledger = _ledger(request, body.service)
    release = await ledger.record(
        version=body.version,
        image=body.image,
        digest=body.digest,
        config_digest=body.config_digest,
        schema_version=body.schema_version,
        source=body.source,
        actor=request[ACTOR],
        reason=body.reason,
        live_at=body.live_at,
    )
    return web.json_response(release_json(release), status=201)


async def mark_green(request: web.Request) -> web.Response:
    body = await body_of(request, GreenBody)
    ledger = _ledger(request, body.service)
    release = await ledger.mark_green(request.match_info["version"], actor=request[ACTOR], reason=body.reason)
    return web.json_response(release_json(release))


async def rollforward(request: web.Request) -> web.Response:
    body = await body_of(request, RollForwardBody)
    core = request.app[CORE]
    incident = await open_rollforward(core, request.match_info["id"], actor=request[ACTOR], reason=body.reason)
    return web.json_response(status.incident_json(incident), status=202)


async def get_traffic(request: web.Request) -> web.Response:
    runtime = request.app[CORE].controls.service(request.query.get("service"))
    switch = runtime.caps.traffic_switch()
    return web.json_response({"service": runtime.name, "switch": switch.kind, "weight": await switch.weight()})


async def set_traffic(request: web.Request) -> web.Response:
    body = await body_of(request, TrafficBody)
    core = request.app[CORE]
    runtime = core.controls.service(body.service)
    switch = runtime.caps.traffic_switch()
    before = await switch.weight()
    await switch.set_weight(body.weight)
    await core.store.append_event(
        Event(
            kind=EventKind.TRAFFIC,
            service=runtime.name,
            actor=request[ACTOR],
            data={"why": body.reason, "switch": switch.kind, "from": before, "to": body.weight},
        )
    )
    return web.json_response(
        {"service": runtime.name, "switch": switch.kind, "weight": body.weight, "previous": before}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/releases", list_releases)
    app.router.add_post("/v1/releases", record_release)
    app.router.add_get("/v1/releases/diff", diff_releases)
    app.router.add_post("/v1/releases/{version}/green", mark_green)
    app.router.add_post("/v1/incidents/{id}/rollforward", rollforward)
    app.router.add_get("/v1/traffic", get_traffic)
    app.router.add_post("/v1/traffic", set_traffic)


def openapi() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    service = {"name": "service", "in": "query", "schema": {"type": "string"}}
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    ident = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    pair = [{"name": n, "in": "query", "required": True, "schema": {"type": "string"}} for n in ("from", "to")]
    paths = {
        "/v1/releases": {
            "get": op("Release history with snapshots and baselines (compatibility matrix)", params=[service, limit]),
            "post": op(
                "Record a deployed release (a digest, or an image the deployer resolves)", body=ReleaseBody, ok="201"
            ),
        },
        "/v1/releases/diff": {
            "get": op(
                "What changes from one release to another (image, env, user, cmd, resources, mounts, schema, data)",
                params=[service, *pair],
            )
        },
        "/v1/releases/{version}/green": {
            "post": op("Mark a release green (measures its baseline)", body=GreenBody, params=[version])
        },
        "/v1/incidents/{id}/rollforward": {
            "post": op("Undo a rollback from the kept copies", body=RollForwardBody, ok="202", params=[ident])
        },
        "/v1/traffic": {
            "get": op("The traffic weight of the guarded version", params=[service]),
            "post": op("Set the traffic weight (0-100)", body=TrafficBody),
        },
    }
    return paths, [ReleaseBody, GreenBody, RollForwardBody, TrafficBody]
