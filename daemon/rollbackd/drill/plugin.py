"""The drill capability's hooks into the core (rollbackd.plugins): the ``drill:`` section's validation,
a Drill per service in ``runtime.caps.drill``, ``POST /v1/drill`` and ``GET /v1/drills``, the
weekly (or configured) schedule, and the last drill in `status`.

A drill is refused (409) while an incident of the service is active or another drill of it runs;
``POST /v1/drill`` answers when the drill has finished (200 with the report, GO or NO-GO).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from rollbackd.drill.options import parse
from rollbackd.errors import ConfigError, PayloadError
from rollbackd.reasons import EventKind

if TYPE_CHECKING:
    from aiohttp import web

    from rollbackd.config import Settings
    from rollbackd.drill.runner import Drill
    from rollbackd.plan import ServiceRuntime
    from rollbackd.scheduler import Scheduler
    from rollbackd.wiring import Core

log = logging.getLogger(__name__)


def validate(settings: Settings) -> list[str]:
    problems: list[str] = []
    for name, svc in settings.services.items():
        if svc.drill is not None:
            problems += parse(name, svc)[1]
    return problems


def build(core: Core) -> None:
    from rollbackd.drill.runner import Drill

    for name, runtime in core.services.items():
        if runtime.config.drill is None:
            continue
        opts, problems = parse(name, runtime.config)
        if problems or opts is None:
            raise ConfigError(problems[0].split(":")[0], problems[0], problems=problems)
        runtime.caps.drill = Drill(core, runtime, opts, clock=core.runner.clock)


def _drills(core: Core) -> list[Drill]:
    from rollbackd.drill.runner import Drill

    return [rt.caps.drill for rt in core.services.values() if isinstance(rt.caps.drill, Drill)]


async def start(core: Core) -> None:
    """The last GO back into the gauge (every replica serves the metric)."""
    for drill in _drills(core):
        from rollbackd.drill.report import last_go_key

        last_go = await core.store.get_kv(last_go_key(drill.service))
        if isinstance(last_go, int | float):
            core.metrics.drill_last_success.labels(drill.service).set(last_go)


async def lead(core: Core) -> None:
    """This replica leads (a single node: at start): what a drill interrupted by the last leader's crash
    left (its journal) is swept and reported NO-GO "interrupted", then scratch containers of this
    installation left behind are removed. Only the leader drills, so a follower's start never touches
    the leader's running drill. A drill asked for meanwhile waits for this (Drill.recovery)."""
    for drill in _drills(core):
        drill.recovery = asyncio.create_task(_recover(drill), name=f"drill-recovery-{drill.service}")
    await asyncio.gather(*(d.recovery for d in _drills(core) if d.recovery is not None))


async def follow(core: Core) -> None:
    """This replica no longer leads: its running drills stop and tear down (the new leader would sweep
    them as interrupted)."""
    await asyncio.gather(*(drill.close() for drill in _drills(core)))


async def _recover(drill: Drill) -> None:
    from rollbackd.deploy.docker import DockerDeployer
    from rollbackd.drill import journal, scratch

    try:
        await journal.recover(drill)
    except Exception:  # the engine or a store may be down: the next lead retries
        log.exception("drill_recover_failed", extra={"service": drill.service})
    deployer = drill.runtime.caps.deployer
    if isinstance(deployer, DockerDeployer):
        try:
            installation = await journal.installation(drill.core.store)
            removed = await scratch.sweep(deployer, drill.service, installation, drill.running_id)
        except Exception as exc:  # the container engine may be down: the daemon goes on
            log.warning("drill_sweep_failed", exc_info=True, extra={"service": drill.service, "error": str(exc)})
        else:
            if removed:
                log.warning("drill_leftovers_removed", extra={"service": drill.service, "containers": removed})


async def stopping(core: Core) -> None:
    """The daemon is stopping: cancel running drills now (each tears down within its teardown_timeout),
    before the API waits for its open requests, one of which may be waiting for a drill."""
    await asyncio.gather(*(drill.close() for drill in _drills(core)))


async def close(core: Core) -> None:
    for drill in _drills(core):
        await drill.close()


def jobs(core: Core, scheduler: Scheduler) -> None:
    for drill in _drills(core):
        if drill.options.schedule is not None:
            scheduler.add(f"drill-{drill.service}", drill.options.schedule, drill.scheduled)


async def status(core: Core, runtime: ServiceRuntime) -> dict[str, Any]:
    from rollbackd.drill.report import last_key
    from rollbackd.drill.runner import Drill

    drill = runtime.caps.drill
    if not isinstance(drill, Drill):
        return {}
    last = await core.store.get_kv(last_key(runtime.name))
    schedule = drill.options.schedule
    return {
        "drill": {
            "last": last,
            "running": drill.running_id,
            "schedule": schedule.model_dump(exclude_none=True) if schedule else None,
        }
    }


# ---- API ------------------------------------------------------------------------------------------
class DrillBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "drill requested"
    background: bool = False  # answer 202 at once; the report is journaled (GET /v1/drills) when it ends


def _drill_for(core: Core, service: str | None) -> Drill:
    from rollbackd.drill.runner import Drill

    runtime = core.controls.service(service)  # one service may go unnamed; an unknown one is a 400
    drill = runtime.caps.drill
    if not isinstance(drill, Drill):
        raise PayloadError("service", f"service {runtime.name!r} has no `drill:` section configured")
    return drill


async def post_drill(request: web.Request) -> web.StreamResponse:
    """Run a drill now and answer with its report (200 for GO and NO-GO alike)."""
    from aiohttp import web

    from rollbackd.api.keys import CORE
    from rollbackd.api.problems import problem
    from rollbackd.api.v1 import ACTOR, body_of
    from rollbackd.incidents.controls import Refused
    from rollbackd.reasons import Reason

    core = request.app[CORE]
    if not core.runner.leadership.leading:
        return problem(409, Reason.NOT_LEADER.sentence, reason=Reason.NOT_LEADER.value)
    body = await body_of(request, DrillBody)
    drill = _drill_for(core, body.service)
    incident = await drill.active_incident()
    if incident is not None:
        raise Refused(Reason.INCIDENT_ACTIVE, f"incident {incident} of {drill.service} is active; no drill now")
    if drill.task is not None and not drill.task.done():
        return problem(
            409,
            f"a drill of {drill.service} is running ({drill.running_id})",
            reason=Reason.DRILL_RUNNING.value,
            drill_id=drill.running_id,
        )
    task = drill.start(reason=body.reason, actor=request[ACTOR])
    if body.background:  # the CLI follows the journal instead of holding this request open
        return web.json_response(
            {
                "id": drill.running_id,
                "service": drill.service,
                "state": "running",
                "follow": f"/v1/drills?service={drill.service}",
            },
            status=202,
        )
    try:
        report = await asyncio.shield(task)  # the drill finishes (and tears down) even if the client goes away
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not task.cancelled() or (current is not None and current.cancelling()):
            raise
        from rollbackd.drill.report import last_key

        report = await core.store.get_kv(last_key(drill.service))  # the daemon stopped it: its NO-GO report
    return web.json_response(report)


async def list_drills(request: web.Request) -> web.Response:
    from aiohttp import web

    from rollbackd.api.keys import CORE
    from rollbackd.api.v1 import query_int, query_service

    core = request.app[CORE]
    limit = query_int(request, "limit", 20, 1, 500)
    wait = query_int(request, "wait", 0, 0, 25)
    if wait and query_service(request) is not None:
        await _until_done(_drill_for(core, query_service(request)), wait)
    events = await core.store.events(service=query_service(request), kinds=(EventKind.DRILL,), limit=limit)
    return web.json_response({"drills": [e.data for e in events]})


async def _until_done(drill: Drill, wait: float) -> None:
    """A follower's long poll: return as soon as the running drill ends (its report is journaled by then), so a
    drill the daemon stops on SIGTERM is reported to the CLI before the API closes."""
    task = drill.task
    if task is not None and not task.done():
        await asyncio.wait({asyncio.ensure_future(asyncio.shield(task))}, timeout=wait)


def routes(app: web.Application) -> None:
    app.router.add_post("/v1/drill", post_drill)
    app.router.add_get("/v1/drills", list_drills)


def openapi() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    from rollbackd.api.openapi import op

    service = {"name": "service", "in": "query", "schema": {"type": "string"}}
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}
    wait = {"name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 25}}
    paths = {
        "/v1/drill": {
            "post": op(
                "Rehearse the rollback on scratch copies (latest snapshot, green image on another port), verify, "
                "tear down; answers the report when done: verdict GO or NO-GO, stages timed, time_to_restore_s. "
                "409 while an incident of the service is active or another drill of it runs",
                body=DrillBody,
            )
        },
        "/v1/drills": {
            "get": op(
                "Drill reports, newest first; with `wait` (seconds, up to 25) and `service`, answers "
                "once the running drill ends or the wait is over (the CLI's long poll)",
                params=[service, limit, wait],
            )
        },
    }
    return paths, [DrillBody]
