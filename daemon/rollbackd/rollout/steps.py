"""The rollout's step types. Its plan (rollbackd.rollout.plan) is

    rollout.canary        deploy the new release beside the live one (weight still 0)
    rollout.phase  x N    set the phase's weight, then evaluate the gates every interval until the
                          decision matrix promotes (next phase) or rolls back (weight 0 at once)
    rollout.complete      at 100 % and clean: the release goes live, is recorded, marked green, baselined
    rollout.rollback x M  the service's own rollback plan, each step run only when a gate rolled back

Everything a phase learns is journaled in the rollout's context (``rollout``), so a kill -9 resumes the
phase where it was: same start, same clean window, same last evaluation.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, cast

from rollbackd import facts
from rollbackd.errors import FatalError
from rollbackd.notify import Message
from rollbackd.plan import BaseStep, StepContext, StepOptions
from rollbackd.reasons import RolloutDecision
from rollbackd.records import JSON, Event, Release
from rollbackd.rollout import table
from rollbackd.rollout.decide import PhaseState, Reading, Verdict, decide
from rollbackd.rollout.kit import Kit
from rollbackd.traffic.steps import switch_of

KEY = "rollout"
_FINAL = (RolloutDecision.PROMOTE, RolloutDecision.ROLLBACK)


def kit_of(ctx: StepContext) -> Kit:
    kit = ctx.runtime.caps.rollout
    if kit is None:  # built for every service by the rollout plugin
        raise FatalError(f"service {ctx.service} has no rollout capability")
    return kit


def rollout_of(ctx: StepContext) -> dict[str, Any]:
    ro = facts.ROLLOUT.of(ctx.incident.context)
    if ro is None:
        ro = {}
        facts.ROLLOUT.put(ctx.incident.context, ro)
    return ro


def release_of(ro: dict[str, Any], service: str) -> Release:
    r = ro["release"]
    return Release(
        service=service,
        version=r["version"],
        image=r.get("image"),
        digest=r.get("digest"),
        config_digest=r.get("config_digest"),
        schema_version=r.get("schema_version"),
    )


async def save(ctx: StepContext, ro: dict[str, Any]) -> None:
    await ctx.remember(facts.ROLLOUT, ro)


class DeployCanary(BaseStep):
    type = "rollout.canary"

    def describe(self) -> str:
        return "deploy the new release beside the live one (no traffic yet)"

    async def is_done(self, ctx: StepContext) -> bool:
        return bool(rollout_of(ctx).get("canary_deployed"))  # else deployed again: the backends are idempotent

    async def run(self, ctx: StepContext) -> JSON:
        ro = rollout_of(ctx)
        await switch_of(ctx).set_weight(0)  # the canary starts with no users, whatever a crash left
        out = await kit_of(ctx).canary.deploy(
            release_of(ro, ctx.service), rollout_id=ctx.incident.id, service=ctx.service
        )
        ro["canary_deployed"] = True
        await save(ctx, ro)
        return {**out, "summary": f"canary {out.get('canary')} runs {ro['version']}"}


class PhaseOptions(StepOptions):
    phase: int
    weight: int


class Phase(BaseStep):
    type = "rollout.phase"
    Options = PhaseOptions

    @property
    def phase(self) -> int:
        return cast(PhaseOptions, self.options).phase

    @property
    def weight(self) -> int:
        return cast(PhaseOptions, self.options).weight

    def describe(self) -> str:
        return f"phase {self.phase + 1}: {self.weight} % of traffic on the new release until its gates decide"

    async def is_done(self, ctx: StepContext) -> bool:
        ro = rollout_of(ctx)
        last = (ro.get("phases") or {}).get(str(self.phase), {}).get("last") or {}
        return bool(ro.get("outcome")) or last.get("decision") == RolloutDecision.PROMOTE.value

    async def run(self, ctx: StepContext) -> JSON:
        ro = rollout_of(ctx)
        if ro.get("outcome"):
            return {"skipped": True, "summary": f"skipped: the rollout was {ro['outcome']}"}
        kit = kit_of(ctx)
        phases = ro.setdefault("phases", {})
        rec = phases.setdefault(
            str(self.phase), {"weight": self.weight, "state": dataclasses.asdict(PhaseState.start(kit.clock()))}
        )
        await save(ctx, ro)  # the phase's start is journaled before users see the new weight
        await switch_of(ctx).set_weight(self.weight)
        interval = kit.config.phases[self.phase].interval
        while True:
            await kit.sleep(interval)
            verdict = await self._evaluate(ctx, kit, ro, rec)
            if verdict.decision is RolloutDecision.PROMOTE:
                return {"decision": "promote", "why": verdict.why, "summary": f"promoted: {verdict.why}"}
            if verdict.decision is RolloutDecision.ROLLBACK:
                await switch_of(ctx).set_weight(0)  # the kill switch first: users back on green now
                ro["outcome"] = "rolled_back"
                ro["rolled_back"] = {"phase": self.phase, "why": verdict.why, "at": kit.clock()}
                await save(ctx, ro)
                return {
                    "decision": "rollback",
                    "why": verdict.why,
                    "weight": 0,
                    "summary": f"rolled back at {self.weight} %: {verdict.why}",
                }

    async def _evaluate(self, ctx: StepContext, kit: Kit, ro: dict[str, Any], rec: dict[str, Any]) -> Verdict:
        state = PhaseState(**rec["state"])
        events = await kit.controls(ctx.incident.id)
        state, alerts = apply_controls(state, events)
        readings = alerts + await kit.read(
            self.phase, service=ctx.service, version=ro["version"], baseline=ro.get("baseline_p95")
        )
        now = kit.clock()
        verdict = decide(readings, state, now, kit.config.phases[self.phase].window)
        previous = (rec.get("last") or {}).get("decision")
        rec["state"] = dataclasses.asdict(verdict.state)
        rec["last"] = {
            "at": now,
            "decision": verdict.decision.value,
            "why": verdict.why,
            "readings": [r.to_json() for r in readings],
        }
        await save(ctx, ro)
        told = verdict.decision in _FINAL or (verdict.decision is RolloutDecision.HOLD and previous != "hold")
        if told:  # a decision, or a hold as it starts: never every interval
            kit.notify(self._message(ctx, verdict.decision, table.evaluation(self.phase, self.weight, rec["last"])))
        return verdict

    def _message(self, ctx: StepContext, decision: RolloutDecision, text: str) -> Message:
        severity = {
            RolloutDecision.ROLLBACK: "danger",
            RolloutDecision.HOLD: "warning",
            RolloutDecision.PROMOTE: "good",
        }.get(decision, "info")
        return Message(
            kind="step",
            title=f"{ctx.service} rollout, phase {self.phase + 1} ({self.weight} %): {decision.value.upper()}",
            service=ctx.service,
            incident_id=ctx.incident.id,
            text=f"```{text}```",
            severity=severity,  # type: ignore[arg-type]
        )


def apply_controls(state: PhaseState, events: list[Event]) -> tuple[PhaseState, list[Reading]]:
    """A human's hold / resume / promote of this phase (journaled after it started, with who), and the
    service's alerts during the rollout: each is a failing hard gate."""
    alerts: list[Reading] = []
    for event in events:
        action = event.data.get("action")
        if action == "alert":
            alerts.append(Reading(f"alert:{event.data.get('alertname')}", "hard", "<=", 1.0, 0.0))
        elif event.ts < state.started_at:
            continue
        elif action == "hold":
            state = dataclasses.replace(state, held_by=event.actor or "?")
        elif action == "resume":
            state = dataclasses.replace(state, held_by=None)
        elif action == "promote":
            state = dataclasses.replace(state, promote_by=event.actor or "?", held_by=None)
    return state, alerts


class Complete(BaseStep):
    type = "rollout.complete"

    def describe(self) -> str:
        return "at 100 % and clean: the release goes live, is recorded, marked green and its baseline measured"

    async def is_done(self, ctx: StepContext) -> bool:
        return bool(rollout_of(ctx).get("outcome"))

    async def run(self, ctx: StepContext) -> JSON:
        ro = rollout_of(ctx)
        if ro.get("outcome"):
            return {"skipped": True, "summary": f"skipped: the rollout was {ro['outcome']}"}
        release = release_of(ro, ctx.service)
        out: JSON = {}
        deployer: Any = ctx.runtime.caps.deployer
        if deployer is not None:  # the live container takes the release the canary proved; then users move
            out["deploy"] = await deployer.deploy(release, incident=ctx.incident.id)
            await deployer.wait_healthy(_deadline(deployer))
        await switch_of(ctx).set_weight(0)
        out["canary"] = await kit_of(ctx).canary.remove(release, rollout_id=ctx.incident.id, service=ctx.service)
        green = await _record_green(ctx, release)
        ro["outcome"] = "promoted"
        ro["baseline_p95"] = green.get("baseline_p95")
        await save(ctx, ro)
        return {
            **out,
            **green,
            "summary": f"{release.version} is live and green (baseline p95 {green.get('baseline_p95')})",
        }


def _deadline(deployer: Any) -> float:
    return time.monotonic() + float(deployer.options.health_timeout)


async def _record_green(ctx: StepContext, release: Release) -> JSON:
    ledger = ctx.runtime.caps.releases
    if ledger is None:
        return {"recorded": False}
    await ledger.record_unless_live(
        release, source="pipeline", actor="rollbackd rollout", reason=f"rollout {ctx.incident.id}"
    )
    green = await ledger.mark_green(
        release.version, actor="rollbackd rollout", reason=f"rollout {ctx.incident.id}: every phase passed its gates"
    )
    return {"recorded": True, "green": True, "baseline_p95": green.baseline_p95}


def rolled_back(ctx: StepContext) -> bool:
    return rollout_of(ctx).get("outcome") == "rolled_back"


class RemoveCanary(BaseStep):
    type = "rollout.remove_canary"

    def describe(self) -> str:
        return "after a rollback: remove the canary (its weight is already 0)"

    async def is_done(self, ctx: StepContext) -> bool:
        return not rolled_back(ctx) or bool(rollout_of(ctx).get("canary_removed"))

    async def run(self, ctx: StepContext) -> JSON:
        if not rolled_back(ctx):
            return {"skipped": True, "summary": "nothing to remove: the rollout was not rolled back"}
        await switch_of(ctx).set_weight(0)
        ro = rollout_of(ctx)
        out = await kit_of(ctx).canary.remove(
            release_of(ro, ctx.service), rollout_id=ctx.incident.id, service=ctx.service
        )
        ro["canary_removed"] = True
        await save(ctx, ro)
        return out


class GuardedOptions(StepOptions):
    step: dict[str, Any]


class Guarded(BaseStep):
    """A step of the service's rollback plan, run only when a gate rolled the release back."""

    type = "rollout.rollback"
    Options = GuardedOptions

    def _inner(self) -> Any:
        from rollbackd.plan import build_plan

        (stage,) = build_plan([cast(GuardedOptions, self.options).step], f"{self.name}.step")
        return stage[0]

    def describe(self) -> str:
        return f"if rolled back: {self._inner().describe()}"

    async def is_done(self, ctx: StepContext) -> bool:
        return not rolled_back(ctx) or bool(await self._inner().is_done(ctx))

    async def run(self, ctx: StepContext) -> JSON:
        if not rolled_back(ctx):
            return {"skipped": True, "summary": "skipped: the rollout was not rolled back"}
        return cast(JSON, await self._inner().run(ctx))
