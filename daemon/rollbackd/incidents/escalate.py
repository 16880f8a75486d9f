"""Paging: when a rollback fails or its verification does, POST a JSON body to the configured paging
webhook (PagerDuty/Opsgenie bridges, an on-call router). ``page`` is one round of a few quick tries;
rollbackd.incidents.pager journals the page and runs rounds in the background until it is delivered.
The body (documented in the README):

    {"event": "rollbackd.escalation", "service": "rag", "incident_id": "...", "state": "verification_failed",
     "error": "...", "summary": "...", "alertname": "...", "opened_at": "...", "finished_at": "...",
     "steps": [{"name": "...", "state": "...", "error": null}]}
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from rollbackd.config import PageWebhook
from rollbackd.records import Alert, Decision, Incident, StepRecord, iso

log = logging.getLogger(__name__)


def page_body(incident: Incident, steps: list[StepRecord]) -> dict[str, Any]:
    return {
        "event": "rollbackd.escalation",
        "service": incident.service,
        "incident_id": incident.id,
        "state": incident.state.value,
        "error": incident.error,
        "summary": f"{incident.service}: rollback incident {incident.id} ended {incident.state.value}; "
        f"automatic actions are held until `rollbackd resume --service {incident.service}`",
        "alertname": incident.trigger.alertname,
        "opened_at": iso(incident.created_at),
        "finished_at": iso(incident.finished_at),
        "steps": [{"name": s.name, "state": s.state.value, "error": s.error} for s in steps],
    }


def refusal_body(alert: Alert, decision: Decision, now: float) -> dict[str, Any]:
    """The same shape for an automatic rollback the guardrails refused (budget exhausted): no incident."""
    return {
        "event": "rollbackd.escalation",
        "service": decision.service,
        "incident_id": None,
        "state": decision.reason.value,
        "error": decision.reason.sentence + (f" ({decision.detail})" if decision.detail else ""),
        "summary": f"{decision.service}: {alert.alertname} fires but no automatic rollback: {decision.reason.sentence}",
        "alertname": alert.alertname,
        "opened_at": iso(now),
        "finished_at": None,
        "steps": [],
    }


async def page(hook: PageWebhook, body: dict[str, Any]) -> bool:
    for attempt in range(1, hook.retries + 2):
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=hook.timeout)) as http,
                http.post(
                    hook.url.get_secret_value(),
                    json=body,
                    headers={k: v.get_secret_value() for k, v in hook.headers.items()},
                ) as resp,
            ):
                if resp.status < 300:
                    log.info("page_sent", extra={"incident_id": body["incident_id"], "status": resp.status})
                    return True
                error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = type(exc).__name__
        log.warning("page_failed", extra={"incident_id": body["incident_id"], "attempt": attempt, "error": error})
        if attempt <= hook.retries:  # no pause after the last try: the pager decides what comes next
            await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
    return False
