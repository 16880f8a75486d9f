"""Plain records that cross module boundaries. Frozen: a record is a fact, not a handle."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from rollbackd.reasons import Action, IncidentState, Reason, StepState

JSON = dict[str, Any]


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Ids this process handed out, for the last few seconds: two incidents of two services opened in one second must
# not share an id (the insert would conflict and read as "another incident is active").
_ISSUED: OrderedDict[str, set[str]] = OrderedDict()
_ISSUED_SECONDS = 8


def new_incident_id(ts: float | None = None) -> str:
    """Sortable, short, unguessable enough to type: ``20261122-031502-a1b2``; never repeated by one process."""
    stamp = datetime.fromtimestamp(ts if ts is not None else now(), UTC).strftime("%Y%m%d-%H%M%S")
    taken = _ISSUED.setdefault(stamp, set())
    _ISSUED.move_to_end(stamp)
    while len(_ISSUED) > _ISSUED_SECONDS:
        _ISSUED.popitem(last=False)
    while (candidate := f"{stamp}-{secrets.token_hex(2)}") in taken:
        pass
    taken.add(candidate)
    return candidate


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of an Alertmanager notification, normalised."""

    fingerprint: str
    status: Literal["firing", "resolved"]
    alertname: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str | None = None
    receiver: str = ""
    group_key: str = ""
    external_url: str = ""
    # computed once: a storm asks for it several times per alert
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Identity for deduplication: the same fingerprint, start and status is the same alert.
        object.__setattr__(self, "key", f"{self.fingerprint}|{self.starts_at.isoformat()}|{self.status}")

    def to_json(self) -> JSON:
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "alertname": self.alertname,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": self.starts_at.isoformat(),
            "endsAt": self.ends_at.isoformat() if self.ends_at else None,
            "generatorURL": self.generator_url,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: Reason
    service: str | None
    detail: str = ""

    @property
    def acts(self) -> bool:
        return self.action is Action.ROLLBACK


@dataclass(frozen=True, slots=True)
class Trigger:
    """What opened an incident: an alert, or a human through the API."""

    kind: Literal["alert", "manual", "drill", "rollout"]
    reason: str
    requested_by: str
    alertname: str | None = None
    fingerprint: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    received_at: float | None = None
    to_release: str | None = None

    def to_json(self) -> JSON:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "alertname": self.alertname,
            "fingerprint": self.fingerprint,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "received_at": self.received_at,
            "to_release": self.to_release,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trigger:
        return cls(
            kind=data["kind"],
            reason=data.get("reason", ""),
            requested_by=data.get("requested_by", ""),
            alertname=data.get("alertname"),
            fingerprint=data.get("fingerprint"),
            labels=data.get("labels") or {},
            annotations=data.get("annotations") or {},
            received_at=data.get("received_at"),
            to_release=data.get("to_release"),
        )


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    service: str
    state: IncidentState
    trigger: Trigger
    dry_run: bool
    created_at: float
    plan: list[JSON]  # the plan as configured when the incident opened (resume runs the same plan)
    context: JSON = field(default_factory=dict)  # target release/snapshot, outputs shared between steps
    started_at: float | None = None
    finished_at: float | None = None
    abort_requested: bool = False
    thread: JSON | None = None  # the notifier's thread reference
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.state.active


@dataclass(frozen=True, slots=True)
class StepRecord:
    incident_id: str
    index: int
    name: str
    type: str
    state: StepState
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    output: JSON = field(default_factory=dict)
    error: str | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class Event:
    """A journal line: a decision, a pause, a resume, a release marked green..."""

    kind: str  # an EventKind (rows of other versions may carry kinds this one does not know)
    service: str | None
    data: JSON
    ts: float = field(default_factory=now)
    incident_id: str | None = None
    reason: str | None = None
    actor: str | None = None
    id: int | None = None
    verdict: str | None = None  # verification and drill events: pass/fail/... or GO/NO-GO (not a reason)


@dataclass(frozen=True, slots=True)
class Pause:
    """A pause set by a human, or a hold set by a failed rollback. service ``*`` is global."""

    service: str
    kind: Literal["pause", "hold"]
    reason: str
    actor: str
    created_at: float
    until: float | None = None
    incident_id: str | None = None

    def in_force(self, at: float) -> bool:
        return self.until is None or at < self.until


@dataclass(frozen=True, slots=True)
class Release:
    service: str
    version: str
    image: str | None = None
    digest: str | None = None
    config_digest: str | None = None
    schema_version: str | None = None
    source: Literal["pipeline", "observed", "manual"] = "pipeline"
    recorded_by: str = ""
    live_at: float | None = None
    status: Literal["deployed", "superseded", "failed", "rolled_back"] = "deployed"
    green_at: float | None = None
    green_by: str | None = None
    green_reason: str | None = None
    baseline_p95: float | None = None
    id: int | None = None
    spec: JSON | None = None  # container name -> spec as it ran (rollbackd.deploy.spec); kept beside the row

    @property
    def green(self) -> bool:
        return self.green_at is not None


@dataclass(frozen=True, slots=True)
class PolicyView:
    """What the policy needs to know about a service's state, read in one go."""

    service: str
    active_incident: str | None
    pause: Pause | None  # the service's own or the global one, whichever is in force
    hold: Pause | None
    auto_rollbacks_in_window: int
    last_auto_rollback_end: float | None
    has_target: bool | None  # None: the service does not track releases
