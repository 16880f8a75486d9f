"""create_app(): routes, the auth and problem middlewares, health, readiness and metrics."""

from __future__ import annotations

import functools

from aiohttp import web
from aiohttp.typedefs import Handler

from rollbackd import plugins
from rollbackd.api import auth, openapi, problems, v1
from rollbackd.api.keys import CORE
from rollbackd.api.problems import problem
from rollbackd.api.webhook import SEEN, WEBHOOK, WEBHOOK_PATH, SeenBodies, alertmanager_webhook
from rollbackd.errors import StateError
from rollbackd.reasons import WebhookResult
from rollbackd.wiring import Core

_OPEN = frozenset({"/healthz", "/readyz", "/metrics", "/v1/openapi.json", WEBHOOK_PATH})


def _authorised(request: web.Request) -> str | None:
    """The API token's name for /v1 (except the webhook and the open paths); "" where none is needed."""
    unmatched = getattr(request.match_info, "http_exception", None) is not None  # 404/405 before auth
    if unmatched or request.path in _OPEN or not request.path.startswith("/v1/"):
        return ""
    tokens = [(t.name, t.token) for t in request.app[CORE].settings.auth.api_tokens]
    return auth.match(auth.bearer(request), tokens)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One middleware (each costs per request): path hygiene, API auth, errors as JSON, 405 counted.
    Auth runs inside the guard, so even a failure there is a JSON problem, never aiohttp's text 500."""
    if request.raw_path == WEBHOOK_PATH and request.method == "POST":  # the storm's path: it checks its own token
        return await problems.guarded(request, handler)
    if problems.suspicious(request.raw_path):
        return problem(404, "no such path")
    response = await problems.guarded(request, functools.partial(_authorised_call, handler=handler))
    if response.status == 405 and request.path == WEBHOOK_PATH:
        request.app[CORE].metrics.webhook_result(WebhookResult.METHOD_NOT_ALLOWED)
    return response


async def _authorised_call(request: web.Request, *, handler: Handler) -> web.StreamResponse:
    actor = _authorised(request)
    if actor is None:
        return problem(401, "missing or wrong API token")
    if actor:
        request[v1.ACTOR] = actor
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    core = request.app[CORE]
    waiting = core.runner.journal.outage.describe(core.runner.clock())
    try:
        await core.store.ping()
    except StateError as exc:
        return problem(503, f"state store unreachable: {exc}", runner=waiting)
    if waiting is not None:  # the store answers a ping, but the runner's writes still fail
        return problem(503, waiting, runner=waiting)
    leadership = core.runner.leadership  # a follower is ready too: it takes webhooks and API calls
    return web.json_response({"ready": True, "leader": leadership.leading, "replica": leadership.replica_id})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[CORE].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def create_app(core: Core) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=1_048_576 + 1)
    app[CORE] = core
    app[WEBHOOK] = core
    app[SEEN] = SeenBodies(core.settings.webhook.body_cache_bytes)
    app.router.add_post(WEBHOOK_PATH, alertmanager_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi.handler)
    v1.add_routes(app)
    for plugin in plugins.having("routes"):
        plugin.routes(app)
    return app
