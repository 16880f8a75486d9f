"""Every reason of the decision table, one row each (pure function, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rollbackd.config import PolicyConfig
from rollbackd.policy import budget_remaining, classify, cooldown_remaining, decide
from rollbackd.reasons import Action, Reason
from rollbackd.records import Alert, Pause, PolicyView

NOW = 1_800_000_000.0
POLICY = PolicyConfig(ignore_alerts=["RAGNoise*"], notify_alerts=["*"])


def alert(name: str = "RAGGateFailRateHigh", status: str = "firing", **labels: str) -> Alert:
    return Alert(
        fingerprint="f1",
        status=status,
        alertname=name,  # type: ignore[arg-type]
        labels={"alertname": name, "service": "rag", **labels},
        annotations={},
        starts_at=datetime(2026, 11, 22, tzinfo=UTC),
        ends_at=None,
    )


def view(**over: object) -> PolicyView:
    base: dict[str, object] = dict(
        service="rag",
        active_incident=None,
        pause=None,
        hold=None,
        auto_rollbacks_in_window=0,
        last_auto_rollback_end=None,
        has_target=True,
    )
    base.update(over)
    return PolicyView(**base)  # type: ignore[arg-type]


def pause(kind: str = "pause", until: float | None = None) -> Pause:
    return Pause(
        service="rag",
        kind=kind,
        reason="deploy freeze",
        actor="alice",
        created_at=NOW - 60,  # type: ignore[arg-type]
        until=until,
    )


CASES = [
    # (id, alert, view, duplicate, dry_run, action, reason)
    ("rollback", alert(), view(), False, False, Action.ROLLBACK, Reason.ROLLBACK_RULE),
    ("duplicate", alert(), view(), True, False, Action.SUPPRESSED, Reason.DUPLICATE),
    ("resolved", alert(status="resolved"), view(), False, False, Action.IGNORE, Reason.RESOLVED),
    ("notify", alert("RAGLatencyP95High"), view(), False, False, Action.NOTIFY, Reason.NOTIFY_RULE),
    ("ignored", alert("RAGNoiseX"), view(), False, False, Action.IGNORE, Reason.NOT_IN_POLICY),
    ("active", alert(), view(active_incident="i1"), False, False, Action.SUPPRESSED, Reason.INCIDENT_ACTIVE),
    ("held", alert(), view(hold=pause("hold")), False, False, Action.SUPPRESSED, Reason.HELD),
    ("paused", alert(), view(pause=pause(until=NOW + 3600)), False, False, Action.SUPPRESSED, Reason.PAUSED),
    (
        "cooldown",
        alert(),
        view(last_auto_rollback_end=NOW - 60, auto_rollbacks_in_window=1),
        False,
        False,
        Action.SUPPRESSED,
        Reason.COOLDOWN,
    ),
    (
        "cooldown over",
        alert(),
        view(last_auto_rollback_end=NOW - 1801, auto_rollbacks_in_window=1),
        False,
        False,
        Action.ROLLBACK,
        Reason.ROLLBACK_RULE,
    ),
    (
        "budget",
        alert(),
        view(auto_rollbacks_in_window=2, last_auto_rollback_end=NOW - 4000),
        False,
        False,
        Action.SUPPRESSED,
        Reason.BUDGET_EXHAUSTED,
    ),
    ("no target", alert(), view(has_target=False), False, False, Action.SUPPRESSED, Reason.NOTHING_TO_ROLL_BACK_TO),
    ("untracked releases", alert(), view(has_target=None), False, False, Action.ROLLBACK, Reason.ROLLBACK_RULE),
    ("dry run", alert(), view(), False, True, Action.SUPPRESSED, Reason.DRY_RUN),
    # A test alert is never acted on, even when it carries a rollback alert's name and nothing blocks.
    ("test alert", alert(rollbackd_test="true"), view(), False, False, Action.IGNORE, Reason.TEST_ALERT),
    (
        "test alert resolved",
        alert(status="resolved", rollbackd_test="true"),
        view(),
        False,
        False,
        Action.IGNORE,
        Reason.TEST_ALERT,
    ),
    ("test label not true", alert(rollbackd_test="false"), view(), False, False, Action.ROLLBACK, Reason.ROLLBACK_RULE),
]


@pytest.mark.parametrize(("name", "a", "v", "dup", "dry", "action", "reason"), CASES, ids=[c[0] for c in CASES])
def test_decision_table(
    name: str, a: Alert, v: PolicyView, dup: bool, dry: bool, action: Action, reason: Reason
) -> None:
    decision = decide(a, service="rag", policy=POLICY, view=v, now=NOW, duplicate=dup, global_dry_run=dry)
    assert (decision.action, decision.reason) == (action, reason)
    # intake hands over the alert's list, cached per service and name: the same decision, row by row
    known = classify(a.alertname, POLICY)
    again = decide(a, service="rag", policy=POLICY, view=v, now=NOW, duplicate=dup, global_dry_run=dry, kind=known)
    assert again == decision


def test_unknown_service_is_recorded_not_acted_on() -> None:
    decision = decide(alert(), service=None, policy=None, view=None, now=NOW, duplicate=False)
    assert (decision.action, decision.reason, decision.service) == (Action.IGNORE, Reason.UNKNOWN_SERVICE, None)


def test_test_alert_names_its_run_and_still_loses_to_a_duplicate() -> None:
    a = alert("RollbackdDoctorTest", rollbackd_test="true", rollbackd_test_id="run-42")
    decision = decide(a, service="rag", policy=POLICY, view=view(), now=NOW, duplicate=False)
    assert (decision.action, decision.reason, decision.detail) == (Action.IGNORE, Reason.TEST_ALERT, "run-42")
    assert decide(a, service="rag", policy=POLICY, view=view(), now=NOW, duplicate=True).reason is Reason.DUPLICATE


def test_guardrail_order_active_before_pause_before_cooldown() -> None:
    v = view(active_incident="i1", pause=pause(), last_auto_rollback_end=NOW)
    assert (
        decide(alert(), service="rag", policy=POLICY, view=v, now=NOW, duplicate=False).reason is Reason.INCIDENT_ACTIVE
    )
    v = view(pause=pause(), last_auto_rollback_end=NOW)
    assert decide(alert(), service="rag", policy=POLICY, view=v, now=NOW, duplicate=False).reason is Reason.PAUSED


def test_names_are_matched_exactly() -> None:
    assert classify("raggatefailratehigh", POLICY) is Action.NOTIFY  # case-sensitive: not the rollback rule
    assert classify("RAGGateFailRateHigh ", POLICY) is Action.NOTIFY  # no stripping
    assert classify("RAGGateFailRateHigh", PolicyConfig(notify_alerts=[])) is Action.ROLLBACK
    assert classify("Other", PolicyConfig(notify_alerts=[])) is Action.IGNORE


def test_budget_and_cooldown_arithmetic() -> None:
    v = view(auto_rollbacks_in_window=1, last_auto_rollback_end=NOW - 600)
    assert budget_remaining(v, POLICY) == 1
    assert cooldown_remaining(v, POLICY, NOW) == pytest.approx(1200)


def test_every_reason_has_a_sentence() -> None:
    assert all(r.sentence for r in Reason)
