"""The code capability's hooks into the core (rollbackd.plugins): deploy and traffic backends, the
release registry (``runtime.caps.releases``), its API routes, and the scheduled jobs that
notice unrecorded images, mark releases green after ``green_after`` and refresh the baseline."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rollbackd import releases
from rollbackd.config import BackendRef, Settings
from rollbackd.deploy import BACKENDS as DEPLOY_BACKENDS
from rollbackd.deploy.ledger import Ledger
from rollbackd.errors import ConfigError, RollbackdError
from rollbackd.registry import resolve, validate_options
from rollbackd.traffic import BACKENDS as TRAFFIC_BACKENDS
from rollbackd.traffic.null import NullTrafficSwitch

if TYPE_CHECKING:
    from aiohttp import web
    from pydantic import BaseModel

    from rollbackd.plan import ServiceRuntime
    from rollbackd.scheduler import Scheduler
    from rollbackd.wiring import Core

log = logging.getLogger(__name__)
_NEEDS_DEPLOY = ("deploy.revert", "deploy.roll_forward")


def _ref(section: dict[str, Any], path: str) -> BackendRef:
    if not isinstance(section.get("type"), str):
        raise ConfigError(f"{path}.type", "required: one of " + ", ".join(sorted(DEPLOY_BACKENDS)))
    return BackendRef.model_validate(section)


def _options(table: Any, section: dict[str, Any], path: str) -> Any:
    ref = _ref(section, path)
    return resolve(table, ref.type, path), validate_options(
        resolve(table, ref.type, path), {"type": ref.type, **ref.options()}, path
    )


def _check_service(name: str, svc: Any) -> list[str]:
    problems: list[str] = []
    types = {s.type for e in svc.plan for s in (getattr(e, "parallel", None) or [e])}
    if svc.deploy is not None:
        path = f"services.{name}.deploy"
        _, opts = _options(DEPLOY_BACKENDS, svc.deploy, path)
        for i, c in enumerate(getattr(opts, "containers", None) or []):
            if not (c.health_url or opts.health_url):
                problems.append(f"{path}.containers[{i}].health_url: required (or a `health_url` for all)")
    elif types & set(_NEEDS_DEPLOY):
        problems.append(f"services.{name}.plan: deploy steps need a `deploy:` section")
    if svc.traffic is not None:
        _options(TRAFFIC_BACKENDS, svc.traffic, f"services.{name}.traffic")
    return problems


def validate(settings: Settings) -> list[str]:
    problems: list[str] = []
    for name, svc in settings.services.items():
        try:
            problems += _check_service(name, svc)
        except ConfigError as exc:
            problems += exc.problems
    return problems


def build(core: Core) -> None:
    for runtime in core.services.values():
        cfg = runtime.config
        deployer = None
        if cfg.deploy is not None:
            cls, opts = _options(DEPLOY_BACKENDS, cfg.deploy, f"services.{runtime.name}.deploy")
            deployer = cls(opts)
            runtime.caps.deployer = deployer
        if cfg.traffic is not None:
            cls, opts = _options(TRAFFIC_BACKENDS, cfg.traffic, f"services.{runtime.name}.traffic")
            runtime.caps.traffic = cls(opts)
        else:
            runtime.caps.traffic = NullTrafficSwitch()
        from rollbackd.deploy import BaselineOptions

        runtime.caps.releases = Ledger(
            service=runtime.name,
            store=core.store,
            metrics=core.metrics,
            prometheus=core.prometheus,
            baseline=deployer.options.baseline if deployer else BaselineOptions(),
            green_after=cfg.releases.green_after,
            service_label=core.settings.service_label,
            deployer=deployer,
            caps=runtime.caps,
            clock=core.runner.clock,
        )


def _tracked(core: Core) -> list[tuple[ServiceRuntime, Ledger]]:
    return [
        (rt, rt.caps.releases)
        for rt in core.services.values()
        if rt.config.releases.track and rt.caps.releases is not None
    ]


async def start(core: Core) -> None:
    for runtime, ledger in _tracked(core):
        try:
            await ledger.export_baseline()
            await ledger.observe()
        except RollbackdError as exc:  # a daemon must start even when the container engine is down
            log.warning("release_observe_failed", extra={"service": runtime.name, "error": str(exc)})


async def close(core: Core) -> None:
    for runtime in core.services.values():
        deployer = runtime.caps.deployer
        if deployer is not None:
            await deployer.close()


def routes(app: web.Application) -> None:
    from rollbackd.deploy import api

    api.add_routes(app)


def openapi() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    from rollbackd.deploy import api

    return api.openapi()


def jobs(core: Core, scheduler: Scheduler) -> None:
    for runtime, ledger in _tracked(core):
        deployer = runtime.caps.deployer
        opts = deployer.options if deployer is not None else None
        if opts is not None and opts.observe is not None:
            scheduler.add(f"observe-{runtime.name}", opts.observe, ledger.observe)
        if runtime.config.releases.green_after is not None and core.prometheus is not None:
            from rollbackd.scheduler import Schedule

            every = opts.green_check if opts is not None and opts.green_check else Schedule(interval=60.0)
            scheduler.add(f"green-{runtime.name}", every, ledger.auto_green)
        if opts is not None and opts.baseline.refresh is not None and core.prometheus is not None:
            scheduler.add(f"baseline-{runtime.name}", opts.baseline.refresh, ledger.refresh_baseline)


async def status(core: Core, runtime: ServiceRuntime) -> dict[str, Any]:
    switch = runtime.caps.traffic
    deployer = runtime.caps.deployer
    out: dict[str, Any] = {
        "deploy": deployer.options.type if deployer is not None else None,
        "traffic": {
            "switch": switch.kind if switch is not None else "null",
            "note": "no traffic switch configured" if switch is None or switch.kind == "null" else None,
        },
    }
    serving = getattr(deployer, "serving", None)
    if serving is not None:
        try:
            out["containers"] = await serving()
        except RollbackdError as exc:
            out["containers"] = {"error": str(exc)}
    if runtime.config.releases.track:
        try:
            target = await releases.target_for(core.store, runtime, None)
            out["rollback_target"] = target.to_json() if target else None
        except releases.NoTarget as refused:
            out["rollback_target"] = None
            out["no_target"] = refused.to_json()
    return out
