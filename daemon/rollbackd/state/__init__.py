"""StateStore: the journal. Everything rollbackd decides or does is written here first.

The store is one object but a few Protocols (alerts, incidents, events, controls, releases, kv, replicas):
callers annotate the one they use; each has its contract suite (tests/contracts/test_state_*.py).

Backends: ``sqlite`` (embedded default, WAL) and ``postgres`` (asyncpg; for a shared, HA-ready state).
Both run the same SQL (rollbackd.state.sql); only the driver differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from rollbackd.reasons import IncidentState, StepState
from rollbackd.records import Alert, Decision, Event, Incident, Pause, PolicyView, Release, StepRecord

BACKENDS: Final[Mapping[str, str]] = {
    "sqlite": "rollbackd.state.sqlite:SqliteStateStore",
    "postgres": "rollbackd.state.postgres:PostgresStateStore",
}


class Lifecycle(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    def decision_version(self, service: str) -> int:
        """Changes whenever a write may have changed what a decision about ``service`` reads (pauses,
        holds, incidents, releases): the intake's cached view is current while this is unchanged."""
        ...


class AlertJournal(Protocol):
    """Alerts as received, with the decision taken on each (the intake's store)."""

    async def seen_alert(self, key: str) -> bool:
        """True when the same alert (fingerprint, start, status) was journaled before."""
        ...

    async def seen_alerts(self, keys: Sequence[str]) -> set[str]:
        """The keys among ``keys`` that were journaled before (one query per webhook body)."""
        ...

    async def journal_alert(
        self,
        alert: Alert,
        service: str | None,
        received_at: float,
        decision: Decision,
        incident: Incident | None,
        event: Event,
    ) -> None:
        """Alert, decision, incident and journal line in one transaction (StateError if another
        incident of the service is active)."""
        ...

    async def journal_alerts(self, rows: Sequence[tuple[Alert, str | None, float, Decision, Event]]) -> list[bool]:
        """Alerts that open no incident, with their decisions and journal lines, in one transaction;
        per row, whether it was new (False: the journal held that alert already, and keeps it as it was)."""
        ...

    async def prune_journal(self, before: float) -> dict[str, int]:
        """Retention: alert and event rows older than ``before`` that no incident refers to; counts."""
        ...

    async def set_alert_decision(self, key: str, decision: Decision, incident_id: str | None) -> None: ...
    async def add_duplicates(self, counts: Mapping[str, int]) -> None: ...
    async def recent_alerts(self, service: str | None, limit: int) -> list[dict[str, Any]]: ...


class IncidentJournal(Protocol):
    """Incidents and their steps, written ahead of what they do (the runner's store)."""

    async def create_incident(self, incident: Incident) -> bool:
        """False when the service already has an active incident (one at a time, enforced by the store)."""
        ...

    async def transition(
        self, incident_id: str, from_states: tuple[IncidentState, ...], to: IncidentState, **fields: Any
    ) -> Incident | None:
        """Compare-and-set of the incident's state; None when it was no longer in ``from_states``."""
        ...

    async def get_incident(self, incident_id: str) -> Incident | None: ...
    async def list_incidents(self, service: str | None, limit: int) -> list[Incident]: ...
    async def active_incidents(self) -> list[Incident]: ...
    async def update_incident(self, incident_id: str, **fields: Any) -> Incident: ...
    async def step_started(
        self, incident_id: str, index: int, name: str, type_: str, attempt: int, ts: float
    ) -> None: ...
    async def step_finished(
        self,
        incident_id: str,
        index: int,
        state: StepState,
        ts: float,
        output: Mapping[str, Any],
        error: str | None,
    ) -> None: ...
    async def steps(self, incident_id: str) -> list[StepRecord]: ...


class EventReader(Protocol):
    """Journal events (decisions, pauses, releases marked green, verdicts...), newest first."""

    async def events(
        self,
        *,
        service: str | None = None,
        kinds: tuple[str, ...] = (),
        incident_id: str | None = None,
        limit: int = 50,
    ) -> list[Event]: ...


class EventLog(EventReader, Protocol):
    async def append_event(self, event: Event) -> int: ...


class ControlStore(Protocol):
    """Pauses and holds, and what the policy reads of a service's state."""

    async def set_pause(self, pause: Pause) -> None: ...
    async def clear_pauses(self, service: str, kinds: tuple[str, ...] = ("pause", "hold")) -> int: ...
    async def pauses(self) -> list[Pause]: ...
    async def policy_view(self, service: str, now: float, window: float) -> PolicyView: ...


class ReleaseStore(Protocol):
    """The release registry: releases and their append-only history."""

    async def record_release(self, release: Release) -> Release: ...
    async def releases(self, service: str, limit: int = 100) -> list[Release]: ...
    async def update_release(self, release_id: int, **fields: Any) -> Release: ...
    async def change_release(
        self, release_id: int, *, change: str, actor: str, note: str, ts: float, **fields: Any
    ) -> Release:
        """Update a release and append ``change`` (a status, ``green`` or ``baseline``) to its history."""
        ...

    async def release_history(self, service: str, limit: int = 200) -> list[dict[str, Any]]:
        """Append-only history of the service's releases (id, release_id, version, ts, change, actor, note)."""
        ...


class KvStore(Protocol):
    """Small named JSON values: notifier threads, the snapshot index, last verification and drill, schedules."""

    async def get_kv(self, key: str) -> Any: ...
    async def set_kv(self, key: str, value: Any) -> None: ...
    async def add_kv(self, key: str, value: Any) -> Any:
        """``value`` stored under ``key`` unless the key holds one already; the value the key holds after
        (the first writer's, for every writer racing on any replica)."""
        ...


class ReplicaView(Protocol):
    async def replicas(self) -> dict[str, Any]:
        """HA: ``leader`` (holder, token, since, expires_at), ``replicas`` (heartbeats), ``now`` (store clock)."""
        ...


class StateStore(
    Lifecycle, AlertJournal, IncidentJournal, EventLog, ControlStore, ReleaseStore, KvStore, ReplicaView, Protocol
):
    """Everything: what the concrete stores implement and the wiring hands out. A caller annotates the
    narrow Protocol above that it uses."""


__all__ = [
    "BACKENDS",
    "AlertJournal",
    "ControlStore",
    "EventLog",
    "EventReader",
    "IncidentJournal",
    "IncidentState",
    "KvStore",
    "Lifecycle",
    "ReleaseStore",
    "ReplicaView",
    "StateStore",
]

if TYPE_CHECKING:  # mypy proves both concrete stores implement every Protocol above
    from rollbackd.state.postgres import PostgresStateStore
    from rollbackd.state.sqlite import SqliteStateStore

    _STORES: tuple[type[StateStore], ...] = (SqliteStateStore, PostgresStateStore)
