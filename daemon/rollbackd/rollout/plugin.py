"""The rollout capability's hooks into the core (rollbackd.plugins): its config section, the kit each
service's rollout steps use (``runtime.caps.rollout``), and the ``/v1/rollouts`` routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollbackd.config import Settings
from rollbackd.errors import ConfigError
from rollbackd.rollout import config
from rollbackd.rollout.kit import CanaryBackend, CanaryRunner, Kit

if TYPE_CHECKING:
    from aiohttp import web
    from pydantic import BaseModel

    from rollbackd.records import Incident
    from rollbackd.wiring import Core


def validate(settings: Settings) -> list[str]:
    problems: list[str] = []
    for name, svc in settings.services.items():
        try:
            config.parse(svc.rollout, f"services.{name}.rollout")
        except ConfigError as exc:
            problems += exc.problems
    return problems


def build(core: Core) -> None:
    for runtime in core.services.values():
        cfg = config.parse(runtime.config.rollout, f"services.{runtime.name}.rollout")
        runtime.caps.rollout = Kit(
            config=cfg,
            prometheus=core.prometheus,
            events=core.store,
            canary=_canary(cfg.canary, runtime.caps.deployer),
            notify=core.notify.reply,
            clock=core.runner.clock,
        )


async def finished(core: Core, incident: Incident) -> None:
    """An incident ended here: an aborted rollout's canary is removed (on the replica that ended it)."""
    from rollbackd.rollout.control import remove_after_abort

    await remove_after_abort(core, incident)


async def lead(core: Core) -> None:
    """This replica leads: a rollout aborted just before a crash may still have its canary (the removal
    runs after the end, and is tried once per rollout: remove_after_abort says whether it was)."""
    for name in core.services:
        newest = await core.store.list_incidents(name, 1)
        if newest and not newest[0].active:
            await finished(core, newest[0])


def _canary(options: config.Canary, deployer: Any) -> CanaryBackend:
    """Commands when configured; else a docker service's second container; else only the record."""
    if options.deploy_argv is None and getattr(deployer, "resolves_images", False):
        from rollbackd.rollout.docker import DockerCanary

        return DockerCanary(deployer, options)
    return CanaryRunner(options)


def routes(app: web.Application) -> None:
    from rollbackd.rollout import api

    api.add_routes(app)


def openapi() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    from rollbackd.rollout import api

    return api.openapi()
