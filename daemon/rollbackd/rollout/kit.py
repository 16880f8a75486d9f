"""What a rollout's steps use, built once per service by the rollout plugin and kept in
``runtime.caps.rollout``: the config, the gate reader (Prometheus), the canary runner, the
journal of human controls (promote, hold, resume: events of the rollout, each with who)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from rollbackd import deploy
from rollbackd.deploy.command import run_argv
from rollbackd.errors import BackendError
from rollbackd.notify import Message
from rollbackd.prom import promql_string
from rollbackd.records import JSON, Event, Release
from rollbackd.rollout.config import Canary, Gate, RolloutConfig
from rollbackd.rollout.decide import Reading, reading
from rollbackd.state import EventReader

CONTROL = "rollout_control"  # the event kind of a human's promote / hold / resume / alert


class CanaryBackend(Protocol):
    async def deploy(self, release: Release, *, rollout_id: str, service: str) -> JSON: ...
    async def remove(self, release: Release, *, rollout_id: str, service: str) -> JSON: ...


class Scalar(Protocol):
    async def scalar(self, expr: str) -> float | None: ...


def expression(gate: Gate, *, service: str, version: str, window: float) -> str:
    """The gate's PromQL with its placeholders filled; label values only as escaped strings."""
    return (
        gate.expr.replace("$service", promql_string(service))
        .replace("$version", promql_string(version))
        .replace("$window", f"{max(1, round(window))}s")
    )


@dataclass
class CanaryRunner:
    options: Canary

    def _values(self, release: Release, rollout_id: str, service: str) -> dict[str, str]:
        values = deploy.release_values(release, rollout_id)
        return {**values, "port": str(self.options.port or ""), "name": service + self.options.suffix}

    async def deploy(self, release: Release, *, rollout_id: str, service: str) -> JSON:
        out: JSON = {"canary": service + self.options.suffix, "version": release.version}
        if self.options.deploy_argv:
            argv = _render(self.options.deploy_argv, self._values(release, rollout_id, service))
            await run_argv(argv, timeout=self.options.timeout, env={}, what="rollout canary deploy")
            out["argv"] = argv
        if self.options.health_url:
            out.update(
                await deploy.wait_urls(
                    [self.options.health_url], time.monotonic() + self.options.timeout, 0.2, "rollout canary health"
                )
            )
        return out

    async def remove(self, release: Release, *, rollout_id: str, service: str) -> JSON:
        if not self.options.remove_argv:
            return {"removed": False}
        argv = _render(self.options.remove_argv, self._values(release, rollout_id, service))
        await run_argv(argv, timeout=self.options.timeout, env={}, what="rollout canary remove")
        return {"removed": True, "argv": argv}


def _render(argv: list[str], values: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


@dataclass
class Kit:
    config: RolloutConfig
    prometheus: Scalar | None
    events: EventReader  # the controls and alerts it reads
    canary: CanaryBackend
    notify: Callable[[Message], None] = lambda message: None  # a reply in the rollout's thread
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def read(self, phase: int, *, service: str, version: str, baseline: float | None) -> list[Reading]:
        """Every gate of the phase, read now. Prometheus unreachable is no evidence, never a pass."""
        window = self.config.phases[phase].window
        gates: list[tuple[Literal["hard", "soft"], Gate]] = [
            *(("hard", g) for g in self.config.hard_gates(phase)),
            *(("soft", g) for g in self.config.soft_gates(phase)),
        ]
        out = []
        for kind, gate in gates:
            out.append(reading(gate, kind, await self._value(gate, service, version, window), baseline))
        return out

    async def _value(self, gate: Gate, service: str, version: str, window: float) -> float | None:
        if self.prometheus is None:
            return None
        try:
            value = await self.prometheus.scalar(expression(gate, service=service, version=version, window=window))
        except BackendError:
            return None
        return value if value is not None and math.isfinite(value) else None

    async def controls(self, rollout_id: str) -> list[Event]:
        """Humans' promote / hold / resume and alerts of the service, oldest first."""
        found = await self.events.events(kinds=(CONTROL,), incident_id=rollout_id, limit=500)
        return sorted(found, key=lambda e: (e.ts, e.id or 0))
