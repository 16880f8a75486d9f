"""Is the alert that opened an incident still firing? Asked of Prometheus just before the rollback
starts (modes: required — no answer means no rollback; best_effort — no answer means go on; off).
In ``required`` mode a Prometheus error is asked again with backoff for ``policy.confirm_window``
seconds before the rollback is cancelled; the cancellation names the reason and the last error."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from rollbackd.errors import BackendError
from rollbackd.plan import ServiceRuntime
from rollbackd.prom import Prometheus
from rollbackd.reasons import IncidentState, Reason
from rollbackd.records import Incident

log = logging.getLogger(__name__)


Verdict = tuple[IncidentState, Reason, str]  # the state to end in, why, and the detail to announce
_PAUSE_FIRST_S = 0.5
_PAUSE_MAX_S = 5.0


class Confirmer:
    def __init__(
        self, prometheus: Prometheus | None, services: Mapping[str, ServiceRuntime], service_label: str
    ) -> None:
        self.prometheus = prometheus
        self.services = services
        self.service_label = service_label

    async def __call__(self, incident: Incident) -> Verdict | None:
        policy = self.services[incident.service].config.policy
        mode = policy.confirm
        if mode == "off" or not incident.trigger.alertname:
            return None
        if self.prometheus is None:  # config validation requires one for `required`
            return (
                None
                if mode == "best_effort"
                else (IncidentState.CANCELLED, Reason.CONFIRM_FAILED, "no prometheus configured")
            )
        labels = {k: v for k, v in incident.trigger.labels.items() if k == self.service_label}
        try:
            firing = await self._ask(
                incident.trigger.alertname, labels, policy.confirm_window if mode == "required" else 0.0
            )
        except BackendError as exc:
            log.warning("confirm_failed", extra={"mode": mode, "error": str(exc)})
            if mode == "best_effort":
                return None
            return (IncidentState.CANCELLED, Reason.CONFIRM_FAILED, f"{exc} (asked for {policy.confirm_window:g}s)")
        if not firing:
            log.info("confirm_not_firing", extra={"alertname": incident.trigger.alertname})
            return IncidentState.CANCELLED, Reason.NOT_CONFIRMED, ""
        log.info("confirm_firing", extra={"alertname": incident.trigger.alertname})
        return None

    async def _ask(self, alertname: str, labels: dict[str, str], window: float) -> bool:
        """Prometheus's answer; one error is not the answer: asked again with backoff for ``window`` seconds."""
        assert self.prometheus is not None
        deadline = time.monotonic() + window
        pause = _PAUSE_FIRST_S
        while True:
            try:
                return await self.prometheus.alert_firing(alertname, labels)
            except BackendError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.info("confirm_retry", extra={"error": str(exc), "left_s": round(left, 1)})
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, _PAUSE_MAX_S)
