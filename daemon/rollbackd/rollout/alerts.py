"""An alert of the service's rollback list while a rollout runs is decided with the rollout in mind:
it is journaled as a failing hard gate of the rollout (the phase rolls back at its next evaluation),
never a second incident."""

from __future__ import annotations

from rollbackd.reasons import Action, Reason
from rollbackd.records import Alert, Decision, Event
from rollbackd.rollout.kit import CONTROL
from rollbackd.state import StateStore


async def during_rollout(
    store: StateStore, alert: Alert, decision: Decision, active: str | None, now: float
) -> Decision:
    incident = await store.get_incident(active) if active else None
    if incident is None or incident.trigger.kind != "rollout" or not incident.active:
        return decision
    await store.append_event(
        Event(
            kind=CONTROL,
            service=incident.service,
            incident_id=incident.id,
            actor="alertmanager",
            ts=now,
            data={"action": "alert", "kind": "alert", "alertname": alert.alertname, "fingerprint": alert.fingerprint},
        )
    )
    return Decision(Action.SUPPRESSED, Reason.ROLLOUT_ALERT, incident.service, f"rollout {incident.id}")
