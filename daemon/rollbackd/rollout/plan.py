"""A rollout's plan, built from the service's ``rollout:`` and its own rollback plan: canary, one phase
step per phase, the completion, then the rollback plan with each step guarded (it runs only when a gate
rolled the release back). Journaled with the rollout like an incident's plan; the runner takes its
credentials back from ``entries`` (never from the journal)."""

from __future__ import annotations

from rollbackd.config import ParallelGroup, PlanEntry, StepConfig
from rollbackd.plan import ServiceRuntime
from rollbackd.rollout.config import RolloutConfig, parse


def config_of(runtime: ServiceRuntime) -> RolloutConfig:
    return parse(runtime.config.rollout, f"services.{runtime.name}.rollout")


def _guarded(spec: StepConfig) -> StepConfig:
    inner = spec.model_dump(mode="json", exclude_none=True)
    return StepConfig.model_validate(
        {
            "type": "rollout.rollback",
            "name": f"rollback: {spec.step_name}",
            "timeout": spec.timeout,
            "retries": spec.retries,
            "backoff": spec.backoff,
            "crash_resumes": spec.crash_resumes,
            "step": inner,
        }
    )


def entries(runtime: ServiceRuntime) -> list[PlanEntry]:
    cfg = config_of(runtime)
    plan: list[PlanEntry] = [StepConfig(type="rollout.canary", timeout=cfg.canary.timeout + 30)]
    for i, phase in enumerate(cfg.phases):
        # a phase lasts until its gates decide (a hold has no end): the bound is a guard, not a plan
        plan.append(
            StepConfig.model_validate(
                {
                    "type": "rollout.phase",
                    "name": f"phase {i + 1} ({phase.weight} %)",
                    "timeout": 30 * 86400.0,
                    "phase": i,
                    "weight": phase.weight,
                }
            )
        )
    plan.append(StepConfig(type="rollout.complete", timeout=cfg.canary.timeout + 300))
    plan.append(StepConfig(type="rollout.remove_canary", timeout=cfg.canary.timeout + 30))
    for entry in runtime.config.plan:
        if isinstance(entry, ParallelGroup):
            plan.append(ParallelGroup(parallel=[_guarded(s) for s in entry.parallel]))
        else:
            plan.append(_guarded(entry))
    return plan
