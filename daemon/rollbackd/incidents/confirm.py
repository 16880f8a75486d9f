"""Is the alert that opened an incident still firing? Asked of Prometheus just before the rollback
starts (modes: required — no answer means no rollback; best_effort — no answer means go on; off)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from rollbackd.errors import BackendError
from rollbackd.plan import ServiceRuntime
from rollbackd.prom import Prometheus
from rollbackd.reasons import IncidentState, Reason
from rollbackd.records import Incident

log = logging.getLogger(__name__)


class Confirmer:
    def __init__(self, prometheus: Prometheus | None, services: Mapping[str, ServiceRuntime],
                 service_label: str) -> None:
        self.prometheus = prometheus
        self.services = services
        self.service_label = service_label

    async def __call__(self, incident: Incident) -> tuple[IncidentState, Reason] | None:
        mode = self.services[incident.service].config.policy.confirm
        if mode == "off" or not incident.trigger.alertname:
            return None
        if self.prometheus is None:  # config validation requires one for `required`
            return None if mode == "best_effort" else (IncidentState.CANCELLED, Reason.CONFIRM_FAILED)
        labels = {k: v for k, v in incident.trigger.labels.items() if k == self.service_label}
        try:
            firing = await self.prometheus.alert_firing(incident.trigger.alertname, labels)
        except BackendError as exc:
            log.warning("confirm_failed", extra={"mode": mode, "error": str(exc)})
            return None if mode == "best_effort" else (IncidentState.CANCELLED, Reason.CONFIRM_FAILED)
        if not firing:
            log.info("confirm_not_firing", extra={"alertname": incident.trigger.alertname})
            return IncidentState.CANCELLED, Reason.NOT_CONFIRMED
        log.info("confirm_firing", extra={"alertname": incident.trigger.alertname})
        return None
