"""Every reason, state and outcome as one enum value that is at once metric label, log field,
API field and Slack text (``.sentence`` is the human form)."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    ROLLBACK = "rollback"
    NOTIFY = "notify"
    IGNORE = "ignore"
    SUPPRESSED = "suppressed"


class Reason(StrEnum):
    # why an action was chosen
    ROLLBACK_RULE = "rollback_rule"
    NOTIFY_RULE = "notify_rule"
    MANUAL = "manual"
    RESOLVED = "resolved"
    UNKNOWN_SERVICE = "unknown_service"
    NOT_IN_POLICY = "not_in_policy"
    TEST_ALERT = "test_alert"
    # guardrails: why an action was held back
    DUPLICATE = "duplicate"
    INCIDENT_ACTIVE = "incident_active"
    ROLLOUT_ALERT = "rollout_alert"  # a rollback alert during a rollout: a failing hard gate of it
    PAUSED = "paused"
    HELD = "held"
    COOLDOWN = "cooldown"
    BUDGET_EXHAUSTED = "budget_exhausted"
    NOT_CONFIRMED = "not_confirmed"
    CONFIRM_FAILED = "confirm_failed"
    NOTHING_TO_ROLL_BACK_TO = "nothing_to_roll_back_to"
    SCHEMA_MISMATCH = "schema_mismatch"
    DRY_RUN = "dry_run"
    CANCELLED_BY_RESOLVE = "cancelled_by_resolve"
    DRILL_RUNNING = "drill_running"
    NOT_LEADER = "not_leader"

    @property
    def sentence(self) -> str:
        return _SENTENCES[self]


_SENTENCES: dict[Reason, str] = {
    Reason.ROLLBACK_RULE: "the alert is on the service's automatic-rollback list",
    Reason.NOTIFY_RULE: "the alert is reported, not acted on",
    Reason.MANUAL: "a human asked for a rollback",
    Reason.RESOLVED: "the alert resolved",
    Reason.UNKNOWN_SERVICE: "the alert names no service that rollbackd guards",
    Reason.NOT_IN_POLICY: "the alert is in no list of the service's policy",
    Reason.TEST_ALERT: 'a test alert (rollbackd_test="true", from `rollbackd doctor`): recorded, never acted on',
    Reason.DUPLICATE: "the same alert (fingerprint and start) was already handled",
    Reason.INCIDENT_ACTIVE: "an incident is already running for this service",
    Reason.ROLLOUT_ALERT: "a rollout of this service is running: the alert fails its hard gate and rolls it back",
    Reason.PAUSED: "automatic actions are paused",
    Reason.HELD: "automatic actions are held after a failed rollback until someone runs `rollbackd resume`",
    Reason.COOLDOWN: "the service is in its cooldown after the last automatic rollback",
    Reason.BUDGET_EXHAUSTED: "the budget of automatic rollbacks for this window is used up",
    Reason.NOT_CONFIRMED: "Prometheus no longer reports the alert as firing",
    Reason.CONFIRM_FAILED: "Prometheus could not be asked whether the alert still fires",
    Reason.NOTHING_TO_ROLL_BACK_TO: "there is no green release to roll back to",
    Reason.SCHEMA_MISMATCH: (
        "the green release would run code-only on data of another schema version: frozen, a human must decide"
    ),
    Reason.DRY_RUN: "dry-run mode: the plan is shown, nothing is changed",
    Reason.CANCELLED_BY_RESOLVE: "the alert resolved before the rollback started",
    Reason.DRILL_RUNNING: "a drill of this service is running",
    Reason.NOT_LEADER: "this replica follows: drills run on the leader (`rollbackd status` names it)",
}

GUARDRAILS: frozenset[Reason] = frozenset(
    {
        Reason.DUPLICATE,
        Reason.INCIDENT_ACTIVE,
        Reason.PAUSED,
        Reason.HELD,
        Reason.COOLDOWN,
        Reason.BUDGET_EXHAUSTED,
        Reason.NOT_CONFIRMED,
        Reason.CONFIRM_FAILED,
        Reason.NOTHING_TO_ROLL_BACK_TO,
        Reason.SCHEMA_MISMATCH,
        Reason.DRY_RUN,
        Reason.CANCELLED_BY_RESOLVE,
    }
)


class IncidentState(StrEnum):
    PENDING = "pending"  # decided, not started (confirming, waiting its start delay)
    RUNNING = "running"
    RESOLVED = "resolved"  # rolled back and verified
    FAILED = "failed"
    VERIFICATION_FAILED = "verification_failed"
    VERIFICATION_INCONCLUSIVE = "verification_inconclusive"
    ABORTED = "aborted"
    CANCELLED = "cancelled"
    DRY_RUN = "dry_run"

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATES


ACTIVE_STATES: frozenset[IncidentState] = frozenset({IncidentState.PENDING, IncidentState.RUNNING})
TERMINAL_STATES: frozenset[IncidentState] = frozenset(set(IncidentState) - ACTIVE_STATES)
# Outcomes after which automatic actions for the service stay held until `rollbackd resume`.
HOLDING_STATES: frozenset[IncidentState] = frozenset(
    {IncidentState.FAILED, IncidentState.VERIFICATION_FAILED, IncidentState.VERIFICATION_INCONCLUSIVE}
)


class StepState(StrEnum):
    PENDING = "pending"
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class WebhookResult(StrEnum):
    ACCEPTED = "accepted"
    UNAUTHORIZED = "unauthorized"
    TOO_LARGE = "too_large"
    BAD_REQUEST = "bad_request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    METHOD_NOT_ALLOWED = "method_not_allowed"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    INCONCLUSIVE = "inconclusive"


class RolloutDecision(StrEnum):
    """What one evaluation of a rollout phase decided (rollbackd.rollout.decide)."""

    WAIT = "wait"  # hard gates pass (or lack evidence) but the phase's window is not over
    PROMOTE = "promote"  # every hard gate passed for the window (or a human promoted): next phase
    HOLD = "hold"  # a soft gate fails, or a human holds: stay at this weight and warn
    ROLLBACK = "rollback"  # a hard gate fails: weight 0 now, then the service's rollback plan


class EventKind(StrEnum):
    """Every kind of journal event: the one vocabulary of ``Event.kind`` (writers use it, readers filter by it)."""

    DECISION = "decision"
    TRIGGER = "trigger"
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"
    PAGE = "page"
    VERIFICATION = "verification"
    DRILL = "drill"
    TRAFFIC = "traffic"
    ROLLFORWARD = "rollforward"
    RELEASE_RECORDED = "release_recorded"
    RELEASE_GREEN = "release_green"
    SNAPSHOT = "snapshot"
    SNAPSHOT_VERIFY = "snapshot_verify"
    SNAPSHOT_PRUNE = "snapshot_prune"
    SNAPSHOT_RESTORE_STARTED = "snapshot_restore_started"
    ALIAS_ADOPT_STARTED = "alias_adopt_started"
    ALIAS_ADOPT = "alias_adopt"
    JOB_STARTED = "job_started"
    JOB_DONE = "job_done"
    JOB_FAILED = "job_failed"
    STEP_PROCESS = "step_process"
    STEP_INTERRUPTED = "step_interrupted"


# Kinds whose outcome is a verdict (pass/fail/... or GO/NO-GO), kept in ``Event.verdict``; rows written before
# that field existed carried it in ``reason``.
VERDICT_KINDS: frozenset[str] = frozenset({EventKind.VERIFICATION, EventKind.DRILL})
