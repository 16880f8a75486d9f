"""The Step contract (tests/contracts/test_step_contract.py) for the rollout's step types, each in a world
where it has work to do: a command canary and a file traffic switch; gates read from a scripted source
(real Prometheus is tests/integration/test_rollout.py), time advanced by the phase's own sleeps."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rollbackd.capabilities import Capabilities
from rollbackd.plan import ServiceRuntime
from rollbackd.records import Event
from rollbackd.rollout.config import Canary, Phase, RolloutConfig
from rollbackd.rollout.kit import CanaryRunner, Kit
from tests.contracts.test_step_contract import Case, StepContract, built, context, file_switch

WRITE = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
REMOVE = "import os, sys; os.path.exists(sys.argv[1]) and os.remove(sys.argv[1])"


class Gauges:
    async def scalar(self, expr: str) -> float | None:
        return 0.0  # every gate passes


class NoControls:
    async def events(
        self,
        *,
        service: str | None = None,
        kinds: tuple[str, ...] = (),
        incident_id: str | None = None,
        limit: int = 50,
    ) -> list[Event]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


World = tuple[ServiceRuntime, dict[str, Any], Path, Path]


def world_of(tmp_path: Path, *, outcome: str | None = None, canary: bool = False) -> World:
    switch, weight = file_switch(tmp_path, 0)
    canary_file = tmp_path / "canary"
    if canary:
        canary_file.write_text("v2")
    clock = Clock()
    kit = Kit(
        config=RolloutConfig(
            phases=[Phase(weight=10, window=1, interval=0.5), Phase(weight=100, window=1, interval=0.5)]
        ),
        prometheus=Gauges(),
        events=NoControls(),
        canary=CanaryRunner(
            Canary(
                deploy_argv=[sys.executable, "-c", WRITE, str(canary_file), "{version}"],
                remove_argv=[sys.executable, "-c", REMOVE, str(canary_file)],
            )
        ),
        clock=clock,
        sleep=clock.sleep,
    )
    runtime = ServiceRuntime("rag", None, Capabilities(traffic=switch, rollout=kit))  # type: ignore[arg-type]
    saved = {
        "rollout": {
            "version": "v2",
            "release": {"version": "v2", "digest": "sha256:" + "2" * 64},
            "green": "v1",
            "baseline_p95": 0.5,
            "phases": {},
            "outcome": outcome,
        }
    }
    return runtime, saved, weight, canary_file


def files(*paths: Path) -> Any:
    async def world() -> tuple[str | None, ...]:
        return tuple(p.read_text() if p.exists() else None for p in paths)

    return world


class TestRolloutCanary(StepContract):
    type = "rollout.canary"

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        runtime, saved, weight, canary = world_of(tmp_path)
        yield Case(built({"type": "rollout.canary"}), context(runtime, saved), files(weight, canary))


class TestRolloutPhase(StepContract):
    type = "rollout.phase"

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        runtime, saved, weight, _ = world_of(tmp_path, canary=True)
        yield Case(built({"type": "rollout.phase", "phase": 0, "weight": 10}), context(runtime, saved), files(weight))


class TestRolloutComplete(StepContract):
    type = "rollout.complete"

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        runtime, saved, weight, canary = world_of(tmp_path, canary=True)
        yield Case(built({"type": "rollout.complete"}), context(runtime, saved), files(weight, canary))


class TestRolloutRemoveCanary(StepContract):
    type = "rollout.remove_canary"

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        runtime, saved, weight, canary = world_of(tmp_path, outcome="rolled_back", canary=True)
        yield Case(built({"type": "rollout.remove_canary"}), context(runtime, saved), files(weight, canary))


class TestRolloutGuardedStep(StepContract):
    type = "rollout.rollback"

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        runtime, saved, weight, _ = world_of(tmp_path, outcome="rolled_back")
        weight.write_text("10")
        step = built({"type": "rollout.rollback", "name": "rollback: traffic.cut", "step": {"type": "traffic.cut"}})
        yield Case(step, context(runtime, saved), files(weight))
