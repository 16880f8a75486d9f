"""`rollbackd rollforward ID`: a new manual incident that undoes incident ID from what it kept: the
data's ``__pre_`` copies (``data.roll_forward``) and the replaced container (``deploy.roll_forward``),
with the service's traffic and verify steps around them when its plan has them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollbackd import facts
from rollbackd.errors import NotFoundError
from rollbackd.incidents.controls import Refused
from rollbackd.reasons import EventKind, Reason
from rollbackd.records import Incident

if TYPE_CHECKING:
    from rollbackd.plan import ServiceRuntime
    from rollbackd.wiring import Core


def rollforward_plan(runtime: ServiceRuntime) -> list[dict[str, Any]]:
    """traffic.cut, data.roll_forward, deploy.roll_forward, verify, traffic.restore: each only when
    the service has that capability (traffic and verify entries are copied from its plan)."""
    cfg = runtime.config
    configured: dict[str, dict[str, Any]] = {}
    for entry in cfg.plan:
        for spec in getattr(entry, "parallel", None) or [entry]:
            configured.setdefault(spec.type, spec.model_dump(mode="json", exclude_none=True))
    plan: list[dict[str, Any]] = []
    if "traffic.cut" in configured:
        plan.append(configured["traffic.cut"])
    if cfg.snapshots is not None:
        plan.append({"type": "data.roll_forward"})
    if cfg.deploy is not None:
        plan.append({"type": "deploy.roll_forward"})
    if "verify" in configured:
        plan.append(configured["verify"])
    if "traffic.restore" in configured:
        plan.append(configured["traffic.restore"])
    return plan


async def open_rollforward(core: Core, incident_id: str, *, actor: str, reason: str) -> Incident:
    original = await core.store.get_incident(incident_id)
    if original is None:
        raise NotFoundError(f"no incident {incident_id}")
    if original.active:
        raise Refused(Reason.INCIDENT_ACTIVE, f"incident {incident_id} is still {original.state.value}")
    runtime = core.services[original.service]
    before = facts.DEPLOY_FROM.of(original.context) or facts.DeployOrigin(version=None)
    context = facts.new_context()
    facts.ROLLFORWARD_OF.put(context, incident_id)
    facts.TARGET.put(
        context,
        facts.TargetFact(
            version=before.version,
            release_id=before.release_id,
            why=f"roll-forward of incident {incident_id}: back to what ran before it",
        ),
    )
    async with core.intake.lock(runtime.name):
        incident = await core.controls.by_hand(
            runtime, f"roll forward {incident_id}: {reason}", actor, plan=rollforward_plan(runtime), context=context
        )
        await core.controls.opened(incident, EventKind.ROLLFORWARD, actor, reason, {"rollforward_of": incident_id})
    core.runner.start(incident.id)
    return incident
