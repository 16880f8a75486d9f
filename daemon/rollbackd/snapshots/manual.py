"""A restore asked for by hand (`rollbackd snapshot restore ID`) runs as an incident: the same journal,
runner, Slack thread and `show` as a rollback, with the data-only plan ``snapshot.safety -> data.prepare ->
data.swap``. So it outlives the HTTP request (the CLI follows the incident), survives a daemon restart (the
runner resumes it from the journal), and `rollbackd rollforward <incident>` undoes it from the kept copies."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollbackd import facts
from rollbackd.incidents.controls import Refused
from rollbackd.reasons import EventKind, Reason
from rollbackd.records import Incident

if TYPE_CHECKING:
    from rollbackd.snapshots.dataset import DataSet
    from rollbackd.wiring import Core

RESTORE_PLAN = ({"type": "snapshot.safety"}, {"type": "data.prepare"}, {"type": "data.swap"})


async def open_restore(
    core: Core, data: DataSet, set_id: str, *, actor: str, reason: str, allow_foreign: str | None = None
) -> Incident:
    """Check what can refuse the restore now (set, origin, swap blockers; the re-hash runs in the safety
    step), then open the incident and start it. Refused while another incident of the service is active."""
    runtime = core.services[data.service]
    async with core.intake.lock(runtime.name):
        view = await core.intake.view(runtime)
        if view.active_incident:
            raise Refused(Reason.INCIDENT_ACTIVE, view.active_incident)
        context = facts.new_context()
        facts.TARGET.put(context, facts.TargetFact(snapshot_set=set_id, why=f"restore by hand: {reason}"))
        if allow_foreign:
            facts.ALLOW_FOREIGN.put(context, allow_foreign)
        incident = await core.controls.by_hand(
            runtime,
            f"restore snapshot {set_id}: {reason}",
            actor,
            plan=[dict(step) for step in RESTORE_PLAN],
            context=context,
        )
        await data.preflight(set_id, incident.id, allow_foreign=allow_foreign, rehash=False)
        await core.controls.opened(
            incident, EventKind.SNAPSHOT_RESTORE_STARTED, actor, reason, {"snapshot_set": set_id}
        )
    core.runner.start(incident.id)
    return incident
