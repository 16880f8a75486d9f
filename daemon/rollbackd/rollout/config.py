"""The ``rollout:`` section of a service: phases, gates, the canary's place. Validated by the rollout
plugin (rollbackd.rollout.plugin) with key paths like the rest of the config; absent, a service gets
the canary plan: 1 -> 10 -> 50 -> 100 % with the default hard and soft gates.

A gate is PromQL (``$service``, ``$version``, ``$window`` substituted, label values escaped) compared
with either an absolute ``threshold`` or, with ``relative_to: baseline_p95`` and ``max_ratio``, the
green release's measured baseline times the ratio."""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rollbackd.config import Duration
from rollbackd.errors import ConfigError
from rollbackd.registry import format_loc

Comparison = Literal["<", "<=", ">", ">="]
Weight = Annotated[int, Field(ge=1, le=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gate(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    expr: Annotated[str, Field(min_length=1)]
    op: Comparison = "<="  # the gate passes when `value op limit`
    threshold: float | None = None
    relative_to: Literal["baseline_p95"] | None = None
    max_ratio: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> Gate:
        relative = self.relative_to is not None or self.max_ratio is not None
        if relative and (self.relative_to is None or self.max_ratio is None):
            raise ValueError("a relative gate needs both `relative_to` and `max_ratio`")
        if relative == (self.threshold is not None):
            raise ValueError("give either `threshold` or `relative_to` with `max_ratio`")
        return self


class Phase(_Strict):
    weight: Weight
    window: Annotated[Duration, Field(gt=0)] = 300.0  # every hard gate passes this long -> PROMOTE
    interval: Annotated[Duration, Field(gt=0)] = 30.0  # how often the gates are read
    hard: list[Gate] | None = None  # None: the rollout's gates
    soft: list[Gate] | None = None

    @model_validator(mode="after")
    def _interval_in_window(self) -> Phase:
        if self.interval > self.window:
            raise ValueError("`interval` must not be longer than `window`")
        return self


class Canary(_Strict):
    """Where the new release runs beside the live one. ``deploy_argv`` and ``remove_argv`` are argv
    templates (``{version}``, ``{image}``, ``{digest}``, ``{incident}``, ``{port}``, ``{name}``; no shell);
    ``health_url`` is polled after the deploy. Without them a ``type: docker`` service gets a second
    container ``<name><suffix>`` (rollbackd.rollout.docker); any other only records the release."""

    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    suffix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "__canary"
    deploy_argv: Annotated[list[str], Field(min_length=1)] | None = None
    remove_argv: Annotated[list[str], Field(min_length=1)] | None = None
    health_url: str | None = None
    timeout: Annotated[Duration, Field(gt=0)] = 600.0
    env: dict[str, str] = {}  # docker: set in the canary's environment ({port}), e.g. a host-network port


_ERRORS = (
    'sum(rate(rag_http_requests_total{service=$service,version=$version,code=~"5.."}[$window]))'
    " / sum(rate(rag_http_requests_total{service=$service,version=$version}[$window]))"
)
_P95 = (
    "histogram_quantile(0.95, sum by (le) (rate("
    "rag_http_request_duration_seconds_bucket{service=$service,version=$version}[$window])))"
)
DEFAULT_HARD = (Gate(name="error_rate", expr=_ERRORS, op="<=", threshold=0.02),)
DEFAULT_SOFT = (Gate(name="latency_p95", expr=_P95, op="<=", relative_to="baseline_p95", max_ratio=1.1),)
DEFAULT_PHASES = (Phase(weight=1), Phase(weight=10), Phase(weight=50), Phase(weight=100))


class RolloutConfig(_Strict):
    phases: Annotated[list[Phase], Field(min_length=1)] = list(DEFAULT_PHASES)
    hard: list[Gate] = list(DEFAULT_HARD)
    soft: list[Gate] = list(DEFAULT_SOFT)
    canary: Canary = Canary()

    @model_validator(mode="after")
    def _phases_climb_to_100(self) -> RolloutConfig:
        weights = [p.weight for p in self.phases]
        if any(b <= a for a, b in itertools.pairwise(weights)):
            raise ValueError(f"phase weights must increase: {weights}")
        if weights[-1] != 100:
            raise ValueError(f"the last phase must be 100 %: {weights}")
        for where, gates in [("hard", self.hard), ("soft", self.soft), *_phase_gates(self.phases)]:
            names = [g.name for g in gates]
            if len(set(names)) != len(names):
                raise ValueError(f"{where}: gate names must be unique: {names}")
        return self

    def hard_gates(self, phase: int) -> list[Gate]:
        own = self.phases[phase].hard
        return list(self.hard if own is None else own)

    def soft_gates(self, phase: int) -> list[Gate]:
        own = self.phases[phase].soft
        return list(self.soft if own is None else own)


def _phase_gates(phases: list[Phase]) -> list[tuple[str, list[Gate]]]:
    out: list[tuple[str, list[Gate]]] = []
    for i, p in enumerate(phases):
        out += [(f"phases[{i}].{kind}", gates) for kind, gates in (("hard", p.hard), ("soft", p.soft)) if gates]
    return out


def parse(section: dict[str, Any] | None, path: str) -> RolloutConfig:
    """The validated section (the default plan when absent); ConfigError lists every problem."""
    try:
        return RolloutConfig.model_validate(section or {})
    except ValidationError as exc:
        problems = [f"{path}{format_loc(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(path, problems[0], problems=problems) from exc
