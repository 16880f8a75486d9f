"""Capabilities that plug into the core: data snapshots, code deploys and traffic, verification,
drills. Each is a module with any of these functions (all optional):

    validate(settings) -> list[str]                 config problems, with key paths, no I/O
    build(core) -> None                             fill each ServiceRuntime.caps (typed handles)
    async start(core) / async close(core)           open and close what build made
    async stopping(core)                            the daemon is stopping: cancel long work first
    async lead(core) / async follow(core)           this replica took / lost the lead (a single node
                                                    leads from its start): the leader's own work
    async finished(core, incident)                  an incident ended on this replica (after its outcome
                                                    is journaled and told; a failure is logged only)
    routes(app) -> None                             extra API routes (aiohttp)
    openapi() -> (paths: dict, models: list)        their part of /v1/openapi.json
    jobs(core, scheduler) -> None                   scheduled jobs (APScheduler 3.x)
    async status(core, runtime) -> dict             extra fields of the service in `status`

Step types are registered in rollbackd.plan.STEP_TYPES and CLI commands in rollbackd.cli.main.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Final

PLUGINS: Final = (
    "rollbackd.snapshots.plugin",
    "rollbackd.deploy.plugin",
    "rollbackd.verify.plugin",
    "rollbackd.drill.plugin",
    "rollbackd.rollout.plugin",
)


def modules() -> Iterator[ModuleType]:
    for name in PLUGINS:
        yield importlib.import_module(name)


def having(function: str) -> Iterator[ModuleType]:
    for module in modules():
        if hasattr(module, function):
            yield module
