"""``/v1/rollouts``: start a rollout, read it, and promote / hold / resume / abort it (each journaled
with the caller's token name)."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from rollbackd import status
from rollbackd.api.keys import CORE
from rollbackd.api.openapi import op
from rollbackd.api.v1 import ACTOR, body_of
from rollbackd.rollout import control

Text = Annotated[str, Field(min_length=1, max_length=300)]
Reason = Annotated[str, Field(min_length=1, max_length=500)]


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str | None = None
    version: Text
    image: Text | None = None
    digest: Text | None = None
    schema_version: Text | None = None
    config_digest: Text | None = None
    reason: Reason = "rollout"


class ControlBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = "by hand"


async def _json(request: web.Request, rollout: Any, code: int = 200) -> web.Response:
    steps = await request.app[CORE].store.steps(rollout.id)
    return web.json_response(status.incident_json(rollout, steps), status=code)


async def start(request: web.Request) -> web.Response:
    body = await body_of(request, StartBody)
    new = control.NewRelease(
        version=body.version,
        image=body.image,
        digest=body.digest,
        schema_version=body.schema_version,
        config_digest=body.config_digest,
    )
    rollout = await control.start(request.app[CORE], body.service, new, actor=request[ACTOR], reason=body.reason)
    return await _json(request, rollout, 202)


async def current(request: web.Request) -> web.Response:
    core = request.app[CORE]
    rollout = await control.rollout_of(core, request.query.get("id"), request.query.get("service"))
    return await _json(request, await core.store.get_incident(rollout.id) or rollout)


async def act(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await body_of(request, ControlBody)
    rollout = await control.rollout_of(core, request.match_info["id"])
    action = request.match_info["action"]
    if action == "abort":
        rollout = await control.abort(core, rollout, actor=request[ACTOR], reason=body.reason)
    elif action in ("promote", "hold", "resume"):
        rollout = await control.control(
            core,
            rollout,
            action,  # type: ignore[arg-type]
            actor=request[ACTOR],
            reason=body.reason,
        )
    else:
        raise web.HTTPNotFound()
    return await _json(request, await core.store.get_incident(rollout.id) or rollout, 202)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/rollouts", start)
    app.router.add_get("/v1/rollouts/current", current)
    app.router.add_post("/v1/rollouts/{id}/{action}", act)


def openapi() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    ident = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    action = {
        "name": "action",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": ["promote", "hold", "resume", "abort"]},
    }
    service = {"name": "service", "in": "query", "schema": {"type": "string"}}
    paths = {
        "/v1/rollouts": {
            "post": op("Start a progressive rollout of a release (1 -> 10 -> 50 -> 100 %)", body=StartBody, ok="202")
        },
        "/v1/rollouts/current": {"get": op("The service's running rollout (or ?id=)", params=[service])},
        "/v1/rollouts/{id}/{action}": {
            "post": op(
                "Promote (skip the wait), hold, resume, or abort (weight 0 now, then the canary goes)",
                body=ControlBody,
                ok="202",
                params=[ident, action],
            )
        },
    }
    return paths, [StartBody, ControlBody]
