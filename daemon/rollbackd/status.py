"""The picture `rollbackd status` shows, built from the journal (also feeds the gauges)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollbackd import facts, plugins, policy, releases
from rollbackd.ha.view import replicas_json
from rollbackd.plan import ServiceRuntime
from rollbackd.reasons import EventKind
from rollbackd.records import Incident, Pause, StepRecord, iso

if TYPE_CHECKING:
    from rollbackd.wiring import Core


def pause_json(p: Pause | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "kind": p.kind,
        "reason": p.reason,
        "by": p.actor,
        "since": iso(p.created_at),
        "until": iso(p.until),
        "incident_id": p.incident_id,
    }


def step_json(s: StepRecord) -> dict[str, Any]:
    return {
        "index": s.index,
        "name": s.name,
        "type": s.type,
        "state": s.state.value,
        "attempts": s.attempts,
        "started_at": iso(s.started_at),
        "finished_at": iso(s.finished_at),
        "duration_s": s.duration,
        "output": s.output,
        "error": s.error,
    }


def incident_json(inc: Incident, steps: list[StepRecord] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": inc.id,
        "service": inc.service,
        "state": inc.state.value,
        "dry_run": inc.dry_run,
        "trigger": inc.trigger.to_json(),
        "created_at": iso(inc.created_at),
        "started_at": iso(inc.started_at),
        "finished_at": iso(inc.finished_at),
        "abort_requested": inc.abort_requested,
        "error": inc.error,
        "target": inc.context.get(facts.TARGET.key),
        "plan": inc.plan,  # as journaled
    }
    if inc.trigger.kind == "rollout":  # phases, gate readings, decisions (rollbackd.rollout.table)
        out["rollout"] = facts.ROLLOUT.of(inc.context)
    if steps is not None:
        total = sum(len(e["parallel"]) if "parallel" in e else 1 for e in inc.plan)
        out["steps"] = [step_json(s) for s in steps]
        out["progress"] = {"done": sum(1 for s in steps if s.state.value in ("done", "skipped")), "total": total}
    return out


async def service_status(core: Core, runtime: ServiceRuntime, now: float) -> dict[str, Any]:
    store = core.store
    view = await core.intake.view(runtime)
    pol = runtime.config.policy
    active = await store.get_incident(view.active_incident) if view.active_incident else None
    history = await store.releases(runtime.name, 200) if runtime.config.releases.track else []
    green = next((r for r in history if r.green), None)
    live = releases.live_release(history)
    decisions = await store.events(service=runtime.name, kinds=(EventKind.DECISION,), limit=10)
    out: dict[str, Any] = {
        "paused": pause_json(view.pause),
        "held": pause_json(view.hold),
        "active_incident": incident_json(active, await store.steps(active.id)) if active else None,
        "cooldown_remaining_s": round(policy.cooldown_remaining(view, pol, now), 1),
        "budget": {
            "remaining": policy.budget_remaining(view, pol),
            "max": pol.budget.max,
            "window_s": pol.budget.window,
        },
        "live_release": live.version if live else None,
        "last_green": green.version if green else None,
        "has_target": view.has_target,
        "confirm": pol.confirm,
        "last_decisions": [
            {
                "at": iso(e.ts),
                "alertname": e.data.get("alertname"),
                "action": e.data.get("action"),
                "reason": e.reason,
                "detail": e.data.get("detail"),
                "incident_id": e.incident_id,
            }
            for e in decisions
        ],
    }
    for plugin in plugins.having("status"):
        out.update(await plugin.status(core, runtime))
    return out


async def build(core: Core, *, now: float, update_metrics: bool = False) -> dict[str, Any]:
    pauses = [p for p in await core.store.pauses() if p.service == "*" and p.in_force(now)]
    out: dict[str, Any] = {
        "mode": core.settings.mode,
        "paused": pause_json(pauses[0]) if pauses else None,
        "services": {},
        "ha": await replicas_json(core.store, core.runner.leadership),
    }
    if core.settings.webhook.acceptors:  # rollbackd.acceptor: how many take webhooks beside the daemon
        serving = core.metrics.registry.get_sample_value("rollbackd_acceptors") or 0
        out["acceptors"] = {"configured": core.settings.webhook.acceptors, "serving": int(serving)}
    metrics = core.metrics if update_metrics else None
    for name, runtime in core.services.items():
        svc = await service_status(core, runtime, now)
        out["services"][name] = svc
        if metrics is not None:
            metrics.paused.labels(name).set(1 if svc["paused"] else 0)
            metrics.held.labels(name).set(1 if svc["held"] else 0)
            metrics.budget_remaining.labels(name).set(svc["budget"]["remaining"])
            metrics.cooldown_remaining.labels(name).set(svc["cooldown_remaining_s"])
            metrics.incident_active.labels(name).set(1 if svc["active_incident"] else 0)
    if metrics is not None:
        metrics.paused.labels("*").set(1 if pauses else 0)
    return out
