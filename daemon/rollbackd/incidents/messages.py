"""What humans read in Slack, built from journal records. One place, so wording stays consistent."""

from __future__ import annotations

from rollbackd import facts
from rollbackd.durations import format_duration
from rollbackd.notify import Message
from rollbackd.reasons import Action, IncidentState, Reason
from rollbackd.records import Alert, Decision, Incident, StepRecord

_OUTCOME_SEVERITY = {
    IncidentState.RESOLVED: "good",
    IncidentState.DRY_RUN: "info",
    IncidentState.CANCELLED: "info",
    IncidentState.ABORTED: "warning",
}


def _alert_fields(incident: Incident) -> list[tuple[str, str]]:
    trig = incident.trigger
    fields = [("Service", incident.service), ("Incident", incident.id)]
    if trig.alertname:
        fields.append(("Alert", trig.alertname))
    for key in ("value", "threshold"):
        if key in trig.annotations:
            fields.append((key.capitalize(), trig.annotations[key]))
    if trig.annotations.get("summary"):
        fields.append(("Summary", trig.annotations["summary"]))
    target = facts.TARGET.of(incident.context)
    if target is not None:
        fields.append(("Target", target.version or f"snapshot set {target.snapshot_set}"))
        if target.why:
            fields.append(("Why this target", target.why))
        if target.what_changed:
            fields.append(("What changed", "\n".join(target.what_changed)))
    fields.append(("Trigger", f"{trig.kind} by {trig.requested_by}"))
    return fields


def opened(incident: Incident) -> Message:
    verb = "Dry run of a rollback" if incident.dry_run else "Rolling back"
    rollout = incident.trigger.kind == "rollout"  # a progressive rollout (rollbackd.rollout): same thread
    if rollout:
        verb = "Rolling out"
    steps = ", ".join(
        s.get("name") or s.get("type", "?")
        if "parallel" not in s
        else "(" + " ∥ ".join(p.get("name") or p["type"] for p in s["parallel"]) + ")"
        for s in incident.plan
    )
    return Message(
        kind="opened",
        title=f"{verb} {incident.service}: {incident.trigger.alertname or incident.trigger.reason}",
        service=incident.service,
        incident_id=incident.id,
        text=f"Decision: {'rollout' if rollout else 'rollback'} ({incident.trigger.reason}). Plan: {steps}",
        fields=tuple(_alert_fields(incident)),
        severity="warning",
    )


def step_started(incident: Incident, name: str, attempt: int, describe: str) -> Message:
    again = f" (attempt {attempt})" if attempt > 1 else ""
    return Message(
        kind="step", title=f"▶ {name}{again}", service=incident.service, incident_id=incident.id, text=describe
    )


def step_finished(incident: Incident, record: StepRecord, summary: str = "") -> Message:
    took = format_duration(record.duration or 0.0)
    if record.error:
        return Message(
            kind="step",
            title=f"✖ {record.name} failed after {took}",
            service=incident.service,
            incident_id=incident.id,
            text=record.error,
            severity="danger",
        )
    return Message(
        kind="step",
        title=f"✔ {record.name} done in {took}",
        service=incident.service,
        incident_id=incident.id,
        text=summary,
        severity="good",
    )


def finished(incident: Incident, steps: list[StepRecord], mention: str | None) -> Message:
    took = format_duration((incident.finished_at or 0) - (incident.started_at or incident.created_at))
    lines = [f"{s.name}: {s.state.value} ({format_duration(s.duration or 0)})" for s in steps]
    failing = incident.state not in _OUTCOME_SEVERITY
    text = "\n".join(lines)
    if incident.error:
        text = f"{incident.error}\n{text}"
    if failing:
        text += (
            "\nAutomatic actions for this service are held until someone runs "
            f"`rollbackd resume --service {incident.service}`."
        )
    return Message(
        kind="escalation" if failing else "finished",
        title=f"{incident.service}: incident {incident.id} {incident.state.value} after {took}",
        service=incident.service,
        incident_id=incident.id,
        text=text,
        fields=tuple(_alert_fields(incident)),
        severity=_OUTCOME_SEVERITY.get(incident.state, "danger"),  # type: ignore[arg-type]
        mention=mention if failing else None,
    )


def decision(alert: Alert, dec: Decision, mention: str | None = None, held_back: int = 0) -> Message:
    service = dec.service or alert.labels.get("service") or "?"
    if dec.action is Action.NOTIFY:
        title = f"{alert.alertname} firing on {service} (reported, no automatic action)"
    else:
        title = f"{alert.alertname} on {service}: no automatic rollback"
    text = dec.reason.sentence + (f" ({dec.detail})" if dec.detail else "")
    if held_back:
        text += f"\n{held_back} more suppression(s) for the same reason since the last message were not posted."
    escalate = dec.reason in (
        Reason.BUDGET_EXHAUSTED,
        Reason.HELD,
        Reason.NOTHING_TO_ROLL_BACK_TO,
        Reason.SCHEMA_MISMATCH,
    )
    return Message(
        kind="escalation" if escalate else "decision",
        title=title,
        service=dec.service,
        text=text,
        fields=(
            ("Alert", alert.alertname),
            ("Decision", dec.action.value),
            ("Reason", dec.reason.value),
            *((k, v) for k, v in alert.annotations.items() if k in ("summary", "value")),
        ),
        severity="danger" if escalate else "warning",
        mention=mention if escalate else None,
    )


def taken_over(incident: Incident, previous: str) -> Message:
    """A replica took the lead while the incident was in progress (rollbackd.ha)."""
    return _resumes(incident, f"⇄ takeover: replica {previous} stopped leading; another replica resumes the rollback")


def resumed(incident: Incident) -> Message:
    """rollbackd restarted (a crash, an upgrade of rollbackd) while the incident was in progress."""
    return _resumes(incident, "↻ rollbackd restarted and resumes the rollback")


def _resumes(incident: Incident, title: str) -> Message:
    return Message(
        kind="step",
        service=incident.service,
        incident_id=incident.id,
        severity="warning",
        title=title,
        text=f"Incident {incident.id} ({incident.state.value}) resumes where the journal left it: "
        "finished steps are not run again.",
    )
