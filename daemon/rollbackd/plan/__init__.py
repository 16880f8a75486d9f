"""A plan is an ordered list of stages; a stage is one step or a parallel group of steps.

Every step type has an idempotent ``run`` and an ``is_done`` check that looks at the real world, so
an incident interrupted by a crash resumes from its first unfinished step and never re-runs a
finished one. Step types are registered by their config ``type:`` in STEP_TYPES (lazy import).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from rollbackd import childenv, facts, redact
from rollbackd.capabilities import Capabilities
from rollbackd.config import ParallelGroup, ServiceConfig, StepConfig
from rollbackd.records import JSON, Incident

STEP_TYPES: Final[Mapping[str, str]] = {
    "command": "rollbackd.plan.command:CommandStep",
    "http": "rollbackd.plan.http:HttpStep",
    "snapshot.safety": "rollbackd.snapshots.steps:SafetySnapshot",
    "data.prepare": "rollbackd.snapshots.steps:PrepareData",
    "data.swap": "rollbackd.snapshots.steps:SwapData",
    "data.roll_forward": "rollbackd.snapshots.steps:RollForwardData",
    "deploy.revert": "rollbackd.deploy.steps:Redeploy",
    "deploy.roll_forward": "rollbackd.deploy.steps:RollForwardDeploy",
    "traffic.cut": "rollbackd.traffic.steps:CutTraffic",
    "traffic.restore": "rollbackd.traffic.steps:RestoreTraffic",
    "verify": "rollbackd.verify.step:Verify",
    "rollout.canary": "rollbackd.rollout.steps:DeployCanary",
    "rollout.phase": "rollbackd.rollout.steps:Phase",
    "rollout.complete": "rollbackd.rollout.steps:Complete",
    "rollout.remove_canary": "rollbackd.rollout.steps:RemoveCanary",
    "rollout.rollback": "rollbackd.rollout.steps:Guarded",
}


class StepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class ServiceRuntime:
    """A guarded service with its built backends: ``caps``, typed handles filled by the plugins."""

    name: str
    config: ServiceConfig
    caps: Capabilities = field(default_factory=Capabilities)

    @property
    def resources(self) -> Mapping[str, object]:
        """Deprecated, kept one release for out-of-tree code: the handles of ``caps`` by name, read-only."""
        return MappingProxyType(dict(self.caps.by_name()))


ContextSaver = Callable[[str, Any], Awaitable[None]]
T = TypeVar("T")


@dataclass
class StepContext:
    incident: Incident
    runtime: ServiceRuntime
    step_name: str
    attempt: int
    dry_run: bool
    outputs: dict[str, JSON]  # outputs of the steps already finished, by step name
    log: logging.LoggerAdapter[logging.Logger]
    save: ContextSaver  # persist a value in the incident's context (survives a restart)

    @property
    def service(self) -> str:
        return self.incident.service

    def fact(self, fact: facts.Fact[T]) -> T | None:
        """A fact an earlier step (or the incident's opening) kept in the context."""
        return fact.of(self.incident.context)

    async def remember(self, fact: facts.Fact[T], value: T) -> None:
        """Keep a fact in the incident's context, journaled before this returns (survives a restart)."""
        await self.save(fact.key, fact.encode(value))

    def env(self) -> dict[str, str]:
        """Alert and incident fields for child processes: passed as environment, never in a command line."""
        trig = self.incident.trigger
        env = {
            "ROLLBACKD_INCIDENT_ID": self.incident.id,
            "ROLLBACKD_SERVICE": self.incident.service,
            "ROLLBACKD_STEP": self.step_name,
            "ROLLBACKD_ATTEMPT": str(self.attempt),
            "ROLLBACKD_DRY_RUN": "1" if self.dry_run else "0",
            "ROLLBACKD_TRIGGER": trig.kind,
            "ROLLBACKD_REASON": trig.reason,
            "ROLLBACKD_ALERTNAME": trig.alertname or "",
            "ROLLBACKD_ALERT_FINGERPRINT": trig.fingerprint or "",
        }
        target = self.fact(facts.TARGET)
        if target is not None and target.version:
            env["ROLLBACKD_TARGET_VERSION"] = target.version
        env.update(childenv.label_vars(trig.labels)[0])  # names that cannot be variables are skipped
        return env

    def template_vars(self) -> dict[str, str]:
        """The same fields for templates (http bodies): lower-case keys without the prefix."""
        return {k.removeprefix("ROLLBACKD_").lower(): v for k, v in self.env().items()}


class Step(Protocol):
    type: ClassVar[str]
    name: str
    spec: StepConfig

    def describe(self) -> str:
        """One line for dry-runs, Slack and `rollbackd show`: what this step will do."""
        ...

    async def is_done(self, ctx: StepContext) -> bool:
        """True when the world already shows this step's effect (checked on resume)."""
        ...

    async def run(self, ctx: StepContext) -> JSON:
        """Do the step; idempotent. Returns figures to journal (durations, ids, counts)."""
        ...


class BaseStep:
    """Shared constructor: every step is built from its StepConfig and validated Options."""

    type: ClassVar[str] = ""
    Options: ClassVar[builtins.type[BaseModel]] = StepOptions

    def __init__(self, spec: StepConfig, options: BaseModel) -> None:
        self.spec = spec
        self.name = spec.step_name
        self.options = options

    def describe(self) -> str:
        return self.type

    async def is_done(self, ctx: StepContext) -> bool:
        return False


Stage = tuple[Step, ...]


def build_plan(
    entries: list[ParallelGroup | StepConfig] | list[JSON],
    path: str,
    secrets_from: list[ParallelGroup | StepConfig] | None = None,
) -> list[Stage]:
    """Build the stages of a plan from config (or from the plan an incident journaled, its masked
    credentials taken back from ``secrets_from``, the service's configured plan).
    Raises one ConfigError listing every problem of every step."""
    if secrets_from is not None:
        entries = redact.restore(list(entries), plan_to_json(secrets_from, redacted=False))
    from rollbackd.errors import ConfigError
    from rollbackd.registry import resolve, validate_options

    stages: list[Stage] = []
    problems: list[str] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            entry = ParallelGroup.model_validate(entry) if "parallel" in entry else StepConfig.model_validate(entry)
        specs = entry.parallel if isinstance(entry, ParallelGroup) else [entry]
        stage: list[Step] = []
        for j, spec in enumerate(specs):
            where = f"{path}[{i}]" + (f".parallel[{j}]" if isinstance(entry, ParallelGroup) else "")
            try:
                cls = resolve(STEP_TYPES, spec.type, where)
                stage.append(cls(spec, validate_options(cls, spec.options(), where)))
            except ConfigError as exc:
                problems.extend(exc.problems)
        stages.append(tuple(stage))
    names = [s.name for st in stages for s in st]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"{path}: step names must be unique; give `name:` to repeated steps: {', '.join(dupes)}")
    if problems:
        raise ConfigError(path, problems[0], problems=problems)
    return stages


def plan_to_json(entries: list[ParallelGroup | StepConfig], *, redacted: bool = True) -> list[JSON]:
    """The plan as an incident journals it: with its credentials masked (see ``build_plan``)."""
    plan = [e.model_dump(mode="json", exclude_none=True) for e in entries]
    return [redact.data(e, limit=100_000) for e in plan] if redacted else plan
