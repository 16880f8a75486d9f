"""How a decided alert is told, once it is journaled: the alerts metric, the `alert_decided` log line,
the Slack message (coalesced per service and reason) and, for a refusal a human must hear about now,
a page. Intake decides; this says what was decided."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rollbackd.incidents import escalate, messages
from rollbackd.incidents.coalesce import Coalescer
from rollbackd.incidents.pager import Pager
from rollbackd.metrics import Metrics
from rollbackd.notify.queue import NotifyQueue
from rollbackd.plan import ServiceRuntime
from rollbackd.reasons import Action, EventKind, Reason
from rollbackd.records import Alert, Decision, Event, Incident

log = logging.getLogger(__name__)

_QUIET = frozenset(
    {Reason.DUPLICATE, Reason.INCIDENT_ACTIVE, Reason.RESOLVED, Reason.NOT_IN_POLICY, Reason.TEST_ALERT}
)  # `doctor --send-test-alert`: recorded, never posted
_NOISE = _QUIET | {Reason.NOTIFY_RULE, Reason.UNKNOWN_SERVICE}
_PAGED = frozenset({Reason.BUDGET_EXHAUSTED})  # a refusal a human must hear about now (held pages at failure)


class Tells(Protocol):
    """What intake tells through: the Teller here, or an acceptor's relay to the daemon (rollbackd.acceptor)."""

    def count(self, service: str | None, action: Action, reason: Reason, n: int = 1) -> None: ...

    async def tell(self, alert: Alert, decision: Decision, incident: Incident | None) -> None: ...


def log_decided(alert: Alert, decision: Decision, incident: Incident | None) -> None:
    """The `alert_decided` line. A storm's noise (notify-only, ignored, quiet) is in the journal and the
    metrics; one log line per such alert costs more than deciding it, so those lines are debug."""
    level = logging.DEBUG if decision.reason in _NOISE else logging.INFO
    if log.isEnabledFor(level):  # the line's fields cost even when the level drops it
        log.log(
            level,
            "alert_decided",
            extra={
                "alertname": alert.alertname,
                "status": alert.status,
                "fingerprint": alert.fingerprint,
                "service": decision.service,
                "decision": decision.action.value,
                "reason": decision.reason.value,
                "detail": decision.detail,
                "incident_id": incident.id if incident else None,
            },
        )


def announced(alert: Alert, decision: Decision) -> bool:
    """Whether the decision is posted (coalesced): quiet reasons, actions and resolutions never are."""
    return not (decision.reason in _QUIET or decision.acts or alert.status == "resolved")


class Teller:
    def __init__(
        self,
        *,
        services: Mapping[str, ServiceRuntime],
        notify: NotifyQueue,
        metrics: Metrics,
        pager: Pager,
        coalesce_window: float,
        clock: Callable[[], float],
    ) -> None:
        self.services = services
        self.notify = notify
        self.metrics = metrics
        self.pager = pager
        self.clock = clock
        self.coalesce = Coalescer(coalesce_window, clock)
        self._counters: dict[tuple[str, ...], Any] = {}

    def count(self, service: str | None, action: Action, reason: Reason, n: int = 1) -> None:
        labels = (service or "", action.value, reason.value)
        counter = self._counters.get(labels)
        if counter is None:  # label lookups cost; a storm takes this path thousands of times a second
            counter = self._counters[labels] = self.metrics.alerts.labels(*labels)
        counter.inc(n)

    async def tell(self, alert: Alert, decision: Decision, incident: Incident | None) -> None:
        self.count(decision.service, decision.action, decision.reason)
        log_decided(alert, decision, incident)
        if announced(alert, decision):
            await self.announce(alert, decision)

    async def announce(self, alert: Alert, decision: Decision, times: int = 1) -> None:
        """Post the decision unless announced already in this window (then counted, told with the next
        one). ``times``: that many alerts decided alike, ``alert`` the first (an acceptor's relay)."""
        for _ in range(times):
            held_back = self.coalesce.admit(decision.service or "", decision.reason)
            if held_back is None:
                continue
            runtime = self.services.get(decision.service or "")
            mention = runtime.config.escalate_mention if runtime else None
            self.notify.post(messages.decision(alert, decision, mention, held_back))
            if runtime is not None and decision.reason in _PAGED:
                await self.pager.page(runtime.name, escalate.refusal_body(alert, decision, self.clock()))


def decision_event(alert: Alert, decision: Decision, incident: Incident | None) -> Event:
    """The decision's journal line."""
    return Event(
        kind=EventKind.DECISION,
        service=decision.service,
        incident_id=incident.id if incident else None,
        reason=decision.reason.value,
        actor="alertmanager",
        data={
            "alertname": alert.alertname,
            "status": alert.status,
            "fingerprint": alert.fingerprint,
            "action": decision.action.value,
            "detail": decision.detail,
            "sentence": decision.reason.sentence,
        },
    )
