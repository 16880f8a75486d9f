"""rollbackd's own metrics, on a registry of its own. Names are a contract (rules/README.md);
label values of every Reason and outcome are created at start so rates exist before the first event."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rollbackd import __version__
from rollbackd.reasons import ACTIVE_STATES, Action, IncidentState, Reason, Verdict, WebhookResult

_DECISION_REASONS: dict[Action, tuple[Reason, ...]] = {
    Action.ROLLBACK: (Reason.ROLLBACK_RULE, Reason.MANUAL),
    Action.NOTIFY: (Reason.NOTIFY_RULE,),
    Action.IGNORE: (Reason.RESOLVED, Reason.UNKNOWN_SERVICE, Reason.NOT_IN_POLICY, Reason.TEST_ALERT),
    Action.SUPPRESSED: tuple(
        r
        for r in Reason
        if r
        not in (
            Reason.ROLLBACK_RULE,
            Reason.MANUAL,
            Reason.NOTIFY_RULE,
            Reason.RESOLVED,
            Reason.UNKNOWN_SERVICE,
            Reason.NOT_IN_POLICY,
            Reason.TEST_ALERT,
        )
    ),
}


class Metrics:
    def __init__(self, services: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Gauge("rollbackd_build_info", "rollbackd version", ["version"], registry=r)
        self.webhooks = Counter("rollbackd_webhooks", "Webhook requests by result", ["result"], registry=r)
        self.alerts = Counter(
            "rollbackd_alerts", "Alerts by decision and reason", ["service", "decision", "reason"], registry=r
        )
        self.incidents = Counter("rollbackd_incidents", "Finished incidents", ["service", "outcome"], registry=r)
        self.incident_active = Gauge("rollbackd_incident_active", "1 while an incident runs", ["service"], registry=r)
        self.step_duration = Histogram(
            "rollbackd_step_duration_seconds",
            "Step durations",
            ["service", "step"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
        )
        self.step_failures = Counter("rollbackd_step_failures", "Failed steps", ["service", "step"], registry=r)
        self.act_latency = Histogram(
            "rollbackd_act_latency_seconds",
            "Webhook received to first step started",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.paused = Gauge("rollbackd_paused", "1 while paused (service=* is global)", ["service"], registry=r)
        self.held = Gauge("rollbackd_held", "1 while held after a failed rollback", ["service"], registry=r)
        self.budget_remaining = Gauge(
            "rollbackd_budget_remaining", "Automatic rollbacks left in the window", ["service"], registry=r
        )
        self.cooldown_remaining = Gauge(
            "rollbackd_cooldown_remaining_seconds", "Cooldown left", ["service"], registry=r
        )
        self.snapshot_last_success = Gauge(
            "rollbackd_snapshot_last_success_timestamp_seconds",
            "Time of the last good snapshot",
            ["service", "store"],
            registry=r,
        )
        self.verifications = Counter(
            "rollbackd_verifications", "Verifier results", ["service", "verifier", "verdict"], registry=r
        )
        self.baseline_p95 = Gauge(
            "rollbackd_baseline_latency_p95_seconds",
            "P95 latency of the last green release",
            ["service"],
            registry=r,
        )
        self.notify_failures = Counter(
            "rollbackd_notify_failures", "Notifications that could not be sent", ["notifier"], registry=r
        )
        self.notify_dropped = Counter(
            "rollbackd_notify_dropped",
            "Notifications dropped on a full queue (incident: an incident's own; other: alert decisions, suppressions)",
            ["priority"],
            registry=r,
        )
        self.drill_last_success = Gauge(
            "rollbackd_drill_last_success_timestamp_seconds", "Time of the last GO drill", ["service"], registry=r
        )
        # RollbackdDrillStale joins on it: only a service whose drill is scheduled can be late with one.
        self.drill_scheduled = Gauge(
            "rollbackd_drill_scheduled", "1 when the service's drill runs on a schedule", ["service"], registry=r
        )
        self.acceptors = Gauge(
            "rollbackd_acceptors", "Acceptor processes taking webhook requests beside the daemon", registry=r
        )
        self.acceptor_exits = Counter(
            "rollbackd_acceptor_exits", "Acceptor processes that exited unasked (each is started again)", registry=r
        )
        self.acceptor_handoffs = Counter(
            "rollbackd_acceptor_handoffs",
            "Requests an acceptor handed to the daemon (bodies that may act or resolve, the API)",
            registry=r,
        )
        self._initialise(list(services))

    def _initialise(self, services: list[str]) -> None:
        self.build_info.labels(__version__).set(1)
        self._webhook_children = {result: self.webhooks.labels(result.value) for result in WebhookResult}
        self.paused.labels("*").set(0)
        for priority in ("incident", "other"):
            self.notify_dropped.labels(priority)
        for svc in services:
            for action, reasons in _DECISION_REASONS.items():
                for reason in reasons:
                    self.alerts.labels(svc, action.value, reason.value)
            for state in IncidentState:
                if state not in ACTIVE_STATES:
                    self.incidents.labels(svc, state.value)
            for gauge in (self.incident_active, self.paused, self.held, self.drill_last_success, self.drill_scheduled):
                gauge.labels(svc).set(0)  # drill 0 = never: stale where a drill is scheduled (drill_scheduled)
        self.alerts.labels("", Action.IGNORE.value, Reason.UNKNOWN_SERVICE.value)
        self.alerts.labels("", Action.SUPPRESSED.value, Reason.DUPLICATE.value)

    def webhook_results(self, result: WebhookResult, n: int) -> None:
        self._webhook_children[result].inc(n)

    def webhook_result(self, result: WebhookResult) -> None:
        self._webhook_children[result].inc()  # children cached: this runs for every webhook request

    def verdict(self, service: str, verifier: str, verdict: Verdict) -> None:
        self.verifications.labels(service, verifier, verdict.value).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
