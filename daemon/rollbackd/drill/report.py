"""A drill's report: what ``rollbackd drill`` prints and status shows, and where it is kept (the last
drill and the last GO per service, a journal event, the last-success metric)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rollbackd.reasons import EventKind
from rollbackd.records import JSON, Event, iso

if TYPE_CHECKING:
    from rollbackd.drill.runner import DrillState
    from rollbackd.wiring import Core

log = logging.getLogger(__name__)
GO, NO_GO = "GO", "NO-GO"
RESTORE_STAGES = ("prepare", "deploy", "verify")


def last_key(service: str) -> str:
    return f"drill.last.{service}"


def last_go_key(service: str) -> str:
    return f"drill.last_go.{service}"


def build_report(service: str, state: DrillState, verdict: str, reason: str, torn_down: bool, finished: float) -> JSON:
    """The report; ``time_to_restore_s`` only when every restore stage (prepare, deploy, verify) passed."""
    stages = [{k: v for k, v in s.items() if not k.startswith("_") and k != "running"} for s in state.stages]
    timed = {s["name"]: s for s in stages}
    restore = (
        round(sum(timed[n]["seconds"] for n in RESTORE_STAGES), 3)
        if all(n in timed and timed[n]["ok"] for n in RESTORE_STAGES)
        else None
    )
    return {
        "id": state.id,
        "service": service,
        "verdict": verdict,
        "reason": reason,
        "snapshot_set": state.snapshot_set,
        "release": state.release,
        "stages": stages,
        "time_to_restore_s": restore,
        "results": state.results,
        "torn_down": torn_down,
        "scratch": state.scratch,
        "notes": state.notes,
        "requested_by": state.actor,
        "isolation": state.isolation,
        "why": state.reason,
        "started_at": iso(state.started_at),
        "finished_at": iso(finished),
        "duration_s": round(finished - state.started_at, 3),
    }


async def record_report(core: Core, report: JSON, now: float) -> None:
    """The last drill (status), a journal event (history), the metric on GO; failures logged only."""
    service = report["service"]
    log.info(
        "drill_finished",
        extra={
            "drill_id": report["id"],
            "verdict": report["verdict"],
            "reason": report["reason"],
            "time_to_restore_s": report["time_to_restore_s"],
            "torn_down": report["torn_down"],
        },
    )
    try:
        await core.store.set_kv(last_key(service), report)
        await core.store.append_event(
            Event(
                kind=EventKind.DRILL,
                service=service,
                data=report,
                verdict=report["verdict"],
                actor=report["requested_by"],
            )
        )
        if report["verdict"] == GO:
            await core.store.set_kv(last_go_key(service), now)
            core.metrics.drill_last_success.labels(service).set(now)
    except Exception:
        log.exception("drill_record_failed", extra={"drill_id": report["id"]})
