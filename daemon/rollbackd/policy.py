"""Alert -> Decision. Pure: everything it needs arrives as arguments, so every reason is a table test.

Guardrails apply in a fixed order, the first that blocks wins:
duplicate, unknown service, test alert, resolved, ignore/notify lists, incident active, held, paused, cooldown,
budget, nothing to roll back to, dry-run. Confirming that the alert still fires needs Prometheus and
happens later, while the incident is pending (rollbackd.incidents.intake).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from rollbackd.config import PolicyConfig
from rollbackd.durations import format_duration
from rollbackd.reasons import Action, Reason
from rollbackd.records import Alert, Decision, PolicyView


def decide(
    alert: Alert,
    *,
    service: str | None,
    policy: PolicyConfig | None,
    view: PolicyView | None,
    now: float,
    duplicate: bool,
    global_dry_run: bool = False,
    kind: Action | None = None,
) -> Decision:
    """The decision for one alert. ``kind`` is ``classify(alert.alertname, policy)`` when the caller knows it
    already (intake caches it per service and name: a storm repeats a few names thousands of times)."""
    if duplicate:
        return Decision(Action.SUPPRESSED, Reason.DUPLICATE, service)
    if service is None or policy is None or view is None:
        return Decision(Action.IGNORE, Reason.UNKNOWN_SERVICE, None)
    if is_test_alert(alert):
        # Before every list: whatever its name, a test alert is recorded and never acted on.
        return Decision(Action.IGNORE, Reason.TEST_ALERT, service, alert.labels.get(TEST_ID_LABEL, ""))
    if alert.status == "resolved":
        return Decision(Action.IGNORE, Reason.RESOLVED, service)
    if kind is None:
        kind = classify(alert.alertname, policy)
    if kind is not Action.ROLLBACK:
        reason = Reason.NOTIFY_RULE if kind is Action.NOTIFY else Reason.NOT_IN_POLICY
        return Decision(kind, reason, service)
    blocked = guardrail(view, policy, now)
    if blocked is not None:
        return blocked
    if global_dry_run or policy.dry_run:
        return Decision(Action.SUPPRESSED, Reason.DRY_RUN, service, "the plan is journaled, not run")
    return Decision(Action.ROLLBACK, Reason.ROLLBACK_RULE, service)


TEST_LABEL = "rollbackd_test"  # "true": a test alert (rollbackd doctor --send-test-alert)
TEST_ID_LABEL = "rollbackd_test_id"  # which test run sent it: the decision's detail


def is_test_alert(alert: Alert) -> bool:
    return alert.labels.get(TEST_LABEL) == "true"


def classify(alertname: str, policy: PolicyConfig) -> Action:
    """Which list an alert name is on: rollback, notify, or ignore (exact names or shell patterns)."""
    if _matches(alertname, policy.ignore_alerts):
        return Action.IGNORE
    if _matches(alertname, policy.rollback_alerts):
        return Action.ROLLBACK
    if _matches(alertname, policy.notify_alerts):
        return Action.NOTIFY
    return Action.IGNORE


def guardrail(view: PolicyView, policy: PolicyConfig, now: float) -> Decision | None:
    """The first guardrail that blocks an automatic rollback, or None. Manual triggers skip
    cooldown and budget (a human decided) but not an active incident."""
    service = view.service
    if view.active_incident is not None:
        return Decision(Action.SUPPRESSED, Reason.INCIDENT_ACTIVE, service, f"incident {view.active_incident}")
    if view.hold is not None:
        return Decision(Action.SUPPRESSED, Reason.HELD, service, view.hold.reason)
    if view.pause is not None:
        until = "" if view.pause.until is None else f" for {format_duration(view.pause.until - now)} more"
        return Decision(Action.SUPPRESSED, Reason.PAUSED, service, f"{view.pause.reason}{until}")
    cooldown_left = cooldown_remaining(view, policy, now)
    if cooldown_left > 0:
        return Decision(Action.SUPPRESSED, Reason.COOLDOWN, service, f"{format_duration(cooldown_left)} left")
    if budget_remaining(view, policy) <= 0:
        detail = f"{policy.budget.max} automatic rollbacks per {format_duration(policy.budget.window)}"
        return Decision(Action.SUPPRESSED, Reason.BUDGET_EXHAUSTED, service, detail)
    if view.has_target is False:
        return Decision(Action.SUPPRESSED, Reason.NOTHING_TO_ROLL_BACK_TO, service)
    return None


def cooldown_remaining(view: PolicyView, policy: PolicyConfig, now: float) -> float:
    if view.last_auto_rollback_end is None:
        return 0.0
    return max(0.0, view.last_auto_rollback_end + policy.cooldown - now)


def budget_remaining(view: PolicyView, policy: PolicyConfig) -> int:
    return max(0, policy.budget.max - view.auto_rollbacks_in_window)


def _matches(name: str, patterns: list[str]) -> bool:
    # Labels are data: exact, case-sensitive comparison; patterns only where the config wrote them.
    return any(name == p or (any(c in p for c in "*?[") and fnmatchcase(name, p)) for p in patterns)
