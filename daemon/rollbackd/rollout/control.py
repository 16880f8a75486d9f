"""What a human does to a rollout: start, promote, hold, resume, abort. Start opens the rollout as an
incident of trigger kind ``rollout`` under the intake's per-service lock, so one rollout or incident
runs per service at a time. Promote, hold and resume are events of the rollout, each with who (the
phase step reads them at its next evaluation); abort is the kill switch: weight 0 now, then the runner
stops the rollout."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

from rollbackd import facts, releases
from rollbackd.errors import NotFoundError, PayloadError
from rollbackd.incidents.controls import Refused
from rollbackd.notify import Message
from rollbackd.plan import ServiceRuntime, plan_to_json
from rollbackd.reasons import IncidentState, Reason
from rollbackd.records import Event, Incident, Release, Trigger
from rollbackd.rollout.kit import CONTROL
from rollbackd.rollout.plan import entries
from rollbackd.rollout.steps import release_of

if TYPE_CHECKING:
    from rollbackd.wiring import Core

Control = Literal["promote", "hold", "resume"]


@dataclasses.dataclass(frozen=True)
class NewRelease:
    version: str
    image: str | None = None
    digest: str | None = None
    schema_version: str | None = None
    config_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def _target(core: Core, runtime: ServiceRuntime, new: NewRelease) -> tuple[dict[str, Any] | None, Any]:
    """What a gate's rollback returns to: the live (green) release, with the snapshot set taken while it
    was live when there is one (the release may migrate data). Judged as if the new one were live."""
    if not runtime.config.releases.track:
        return None, None
    history = await core.store.releases(runtime.name, 500)
    live = releases.live_release(history)
    if live is None:
        raise Refused(Reason.NOTHING_TO_ROLL_BACK_TO, "no live release is recorded: record it first")
    if live.version == new.version:
        raise PayloadError("version", f"{new.version} is already the live release")
    pretend = Release(service=runtime.name, version=new.version, status="deployed", schema_version=new.schema_version)
    try:
        target = await releases.select_target(
            [pretend, *history],
            snapshots=runtime.caps.snapshots,
            data=runtime.config.releases.data,
            to_release=live.version,
        )
    except releases.NoTarget as refused:
        raise Refused(refused.reason, refused.detail) from refused
    return target.to_json(), live


async def start(core: Core, service: str | None, new: NewRelease, *, actor: str, reason: str) -> Incident:
    problem = releases.version_problem(new.version)
    if problem is not None:
        raise PayloadError("version", problem)
    runtime = core.controls.service(service)
    if core.prometheus is None:  # the gates are PromQL: without them nothing could ever promote
        raise PayloadError("service", "a rollout needs `prometheus.url`: its gates are read from Prometheus")
    async with core.intake.lock(runtime.name):
        view = await core.store.policy_view(runtime.name, core.runner.clock(), runtime.config.policy.budget.window)
        if view.active_incident:
            raise Refused(Reason.INCIDENT_ACTIVE, view.active_incident)
        target, live = await _target(core, runtime, new)
        trigger = Trigger(
            kind="rollout",
            reason=reason or f"rollout of {new.version}",
            requested_by=actor,
            received_at=core.runner.clock(),
        )
        incident = await core.intake.new_incident(runtime, trigger, dry_run=False, found=(None, None))
        context = dict(incident.context)
        if target is not None:
            facts.TARGET.put(context, facts.TargetFact.from_json(target))
        facts.ROLLOUT.put(
            context,
            {
                "version": new.version,
                "release": new.to_json(),
                "green": live.version if live else None,
                "baseline_p95": live.baseline_p95 if live else None,
                "phases": {},
                "outcome": None,
            },
        )
        incident = dataclasses.replace(incident, plan=plan_to_json(entries(runtime)), context=context)
        if not await core.store.create_incident(incident):
            raise Refused(Reason.INCIDENT_ACTIVE)
        await _event(core, incident, "start", actor, reason, {"version": new.version})
    core.runner.start(incident.id)
    return incident


async def rollout_of(core: Core, rollout_id: str | None, service: str | None = None) -> Incident:
    """The rollout named, else the service's active one."""
    if rollout_id:
        found = await core.store.get_incident(rollout_id)
    else:
        name = core.controls.service(service).name
        found = next(
            (i for i in await core.store.active_incidents() if i.service == name and i.trigger.kind == "rollout"), None
        )
    if found is None or found.trigger.kind != "rollout":
        raise NotFoundError(f"no rollout {rollout_id}" if rollout_id else "no rollout is running")
    return found


async def control(core: Core, rollout: Incident, action: Control, *, actor: str, reason: str) -> Incident:
    if not rollout.active:
        raise Refused(Reason.INCIDENT_ACTIVE, f"rollout {rollout.id} has ended ({rollout.state.value})")
    await _event(core, rollout, action, actor, reason, {"action": action})
    return rollout


async def abort(core: Core, rollout: Incident, *, actor: str, reason: str) -> Incident:
    """The kill switch: the new release's weight goes to 0 before anything else, then the rollout stops,
    then the canary goes (with no users it could still run the release's background work: consumers,
    schedules). A canary that cannot be removed is journaled and told, never an error of the abort."""
    switch = core.services[rollout.service].caps.traffic
    if switch is not None:
        await switch.set_weight(0)
    await _event(core, rollout, "abort", actor, reason, {"action": "abort", "weight": 0})
    ended = await core.runner.abort(rollout.id)  # the canary goes when it has ended (remove_after_abort)
    return ended or rollout


async def remove_after_abort(core: Core, rollout: Incident) -> None:
    """The runner's hook when an incident ends, on the replica that ended it (with ``ha:``, a follower
    only asks the leader to abort): an aborted rollout's canary is removed once its steps have stopped,
    so no canary deploy is under way any more. Tried once per rollout, journaled either way."""
    if rollout.trigger.kind != "rollout" or rollout.state is not IncidentState.ABORTED:
        return
    kit = core.services[rollout.service].caps.rollout if rollout.service in core.services else None
    ro = facts.ROLLOUT.of(rollout.context)
    if kit is None or not ro or ro.get("outcome") or not ro.get("release"):
        return  # promoted or rolled back: the plan's own steps removed it
    done = await core.store.events(kinds=(CONTROL,), incident_id=rollout.id, limit=500)
    if any(e.data.get("kind") == "canary_removed" for e in done):
        return  # tried already (the hook runs again at resume, after a crash)
    release = release_of(ro, rollout.service)
    try:
        removed = await kit.canary.remove(release, rollout_id=rollout.id, service=rollout.service)
        told, why = f"the canary of {release.version} is removed", ""
    except Exception as exc:  # any failure is the canary's, reported with the abort
        removed = {"removed": False, "error": f"{type(exc).__name__}: {exc}"}
        told, why = f"the canary of {release.version} could NOT be removed: remove it by hand", f"```{exc}```"
    kit.notify(
        Message(
            kind="step",
            title=f"{rollout.service} rollout aborted: {told}",
            service=rollout.service,
            incident_id=rollout.id,
            text=why,
            severity="warning" if why else "info",
        )
    )
    await _event(
        core, rollout, "canary_removed", "rollbackd", "after the abort", {"action": "remove_canary", **removed}
    )


async def _event(core: Core, rollout: Incident, kind: str, actor: str, reason: str, data: dict[str, Any]) -> None:
    await core.store.append_event(
        Event(
            kind=CONTROL if "action" in data else "rollout_start",
            service=rollout.service,
            incident_id=rollout.id,
            actor=actor,
            ts=core.runner.clock(),
            data={"why": reason, "kind": kind, **data},
        )
    )
