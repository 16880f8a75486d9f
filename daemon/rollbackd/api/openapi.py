"""The OpenAPI 3.1 document of the daemon's API, built from the same pydantic models that validate
the bodies, so it cannot drift from what the handlers accept."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from rollbackd import __version__, plugins

_PROBLEM = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
        "reason": {"type": "string"},
    },
}
_PROBLEM_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_ERRORS = {
    code: {"description": text, "content": _PROBLEM_REF}
    for code, text in (
        ("400", "invalid request; `field` names what"),
        ("401", "missing or wrong token"),
        ("404", "not found"),
        ("409", "refused by policy; `reason` says why"),
    )
}


def op(
    summary: str,
    *,
    body: type[BaseModel] | None = None,
    ok: str = "200",
    params: list[dict[str, Any]] | None = None,
    auth: str | None = "api",
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {ok: {"description": "OK"}, **_ERRORS}}
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}},
        }
    if params:
        op["parameters"] = params
    op["security"] = [{auth: []}] if auth else []
    return op


def document() -> dict[str, Any]:
    from rollbackd.alertmanager import WebhookV4
    from rollbackd.api import v1

    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
    service = {"name": "service", "in": "query", "schema": {"type": "string"}}
    ident = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    extra_paths: dict[str, Any] = {}
    extra_models: list[type[BaseModel]] = []
    for plugin in plugins.having("openapi"):
        paths_of, models_of = plugin.openapi()
        extra_paths.update(paths_of)
        extra_models.extend(models_of)
    models: list[type[BaseModel]] = [
        WebhookV4,
        v1.TriggerBody,
        v1.PauseBody,
        v1.ReasonBody,
        v1.ResumeBody,
        *extra_models,
    ]
    schemas: dict[str, Any] = {"Problem": _PROBLEM}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths: dict[str, Any] = {
        "/v1/webhook/alertmanager": {
            "post": {
                **op("Alertmanager webhook v4 (202 once journaled)", body=WebhookV4, ok="202", auth="webhook"),
            }
        },
        "/v1/status": {"get": op("Mode, pauses, active incidents with progress, budget, cooldown, decisions")},
        "/v1/incidents": {"get": op("Incident history", params=[limit, service])},
        "/v1/incidents/{id}": {"get": op("One incident with its steps and journal", params=[ident])},
        "/v1/incidents/{id}/abort": {
            "post": op(
                "Stop the running step (its processes killed), end the incident",
                body=v1.ReasonBody,
                ok="202",
                params=[ident],
            )
        },
        "/v1/trigger": {"post": op("Manual rollback", body=v1.TriggerBody, ok="202")},
        "/v1/pause": {"post": op("Freeze automatic actions (a service or all)", body=v1.PauseBody)},
        "/v1/resume": {
            "post": op("Lift a pause and a hold (the only service, `service`, or `all`)", body=v1.ResumeBody)
        },
        "/v1/openapi.json": {"get": op("This document", auth=None)},
        "/healthz": {"get": op("Liveness", auth=None)},
        "/readyz": {"get": op("Readiness: the state store answers and no journal write waits", auth=None)},
        "/metrics": {"get": op("Prometheus metrics", auth=None)},
        **extra_paths,
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "rollbackd", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "api": {"type": "http", "scheme": "bearer", "description": "an API token (auth.api_tokens)"},
                "webhook": {"type": "http", "scheme": "bearer", "description": "the webhook token"},
            },
        },
    }


async def handler(request: web.Request) -> web.Response:
    return web.json_response(document())
