"""Tables of the journal, written once for SQLite and PostgreSQL (``{serial}`` is the only dialect gap)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from rollbackd.jsontext import one_shot
from rollbackd.reasons import VERDICT_KINDS, IncidentState, StepState
from rollbackd.records import JSON, Event, Incident, Pause, Release, StepRecord, Trigger

SCHEMA_VERSION = 1
# The store's own clock in epoch seconds (HA lease times are the server's, never a replica's).
EPOCH_NOW = "CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)"

DDL = (
    """CREATE TABLE IF NOT EXISTS rb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rb_alerts (
        key TEXT PRIMARY KEY, service TEXT, fingerprint TEXT NOT NULL, alertname TEXT NOT NULL,
        status TEXT NOT NULL, starts_at TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL,
        labels TEXT NOT NULL, annotations TEXT NOT NULL, action TEXT, reason TEXT, incident_id TEXT,
        duplicates INTEGER NOT NULL DEFAULT 0)""",
    """CREATE INDEX IF NOT EXISTS rb_alerts_service ON rb_alerts (service, received_at)""",
    """CREATE TABLE IF NOT EXISTS rb_incidents (
        id TEXT PRIMARY KEY, service TEXT NOT NULL, state TEXT NOT NULL, active INTEGER NOT NULL,
        auto INTEGER NOT NULL, dry_run INTEGER NOT NULL, trigger TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
        abort_requested INTEGER NOT NULL DEFAULT 0, plan TEXT NOT NULL, context TEXT NOT NULL,
        thread TEXT, error TEXT)""",
    # One active incident per service, enforced by the store itself (survives races and restarts).
    """CREATE UNIQUE INDEX IF NOT EXISTS rb_incidents_one_active ON rb_incidents (service) WHERE active = 1""",
    """CREATE INDEX IF NOT EXISTS rb_incidents_service ON rb_incidents (service, created_at)""",
    """CREATE TABLE IF NOT EXISTS rb_steps (
        incident_id TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
        state TEXT NOT NULL, attempts INTEGER NOT NULL, started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION, output TEXT NOT NULL, error TEXT, PRIMARY KEY (incident_id, idx))""",
    """CREATE TABLE IF NOT EXISTS rb_events (
        id {serial}, ts DOUBLE PRECISION NOT NULL, service TEXT, incident_id TEXT, kind TEXT NOT NULL,
        reason TEXT, actor TEXT, data TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS rb_events_service ON rb_events (service, id)""",
    """CREATE TABLE IF NOT EXISTS rb_pauses (
        service TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, until DOUBLE PRECISION, incident_id TEXT,
        PRIMARY KEY (service, kind))""",
    """CREATE TABLE IF NOT EXISTS rb_releases (
        id {serial}, service TEXT NOT NULL, version TEXT NOT NULL, image TEXT, digest TEXT,
        config_digest TEXT, schema_version TEXT, source TEXT NOT NULL, recorded_by TEXT NOT NULL,
        live_at DOUBLE PRECISION, status TEXT NOT NULL, green_at DOUBLE PRECISION, green_by TEXT,
        green_reason TEXT, baseline_p95 DOUBLE PRECISION)""",
    """CREATE INDEX IF NOT EXISTS rb_releases_service ON rb_releases (service, id)""",
    # Append-only: every status change, green mark and baseline of a release, never updated or deleted.
    """CREATE TABLE IF NOT EXISTS rb_release_history (
        id {serial}, release_id BIGINT NOT NULL, service TEXT NOT NULL, version TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL, change TEXT NOT NULL, actor TEXT NOT NULL, note TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS rb_release_history_service ON rb_release_history (service, id)""",
    """CREATE TABLE IF NOT EXISTS rb_kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    # HA (rollbackd.ha): the leader lease (times are the Postgres server's epoch seconds; ``token``
    # grows on every acquisition and fences the writes of a stale leader) and the replicas' heartbeats.
    # Both new tables are created by IF NOT EXISTS on open: an existing journal migrates by itself.
    """CREATE TABLE IF NOT EXISTS rb_leader (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, token BIGINT NOT NULL,
        since DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rb_replicas (
        id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, listen TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, heartbeat_at DOUBLE PRECISION NOT NULL,
        leader_since DOUBLE PRECISION)""",
)

INCIDENT_COLUMNS = (
    "id, service, state, trigger, dry_run, created_at, started_at, finished_at, abort_requested, plan, "
    "context, thread, error"
)
STEP_COLUMNS = "incident_id, idx, name, type, state, attempts, started_at, finished_at, output, error"
EVENT_COLUMNS = "id, ts, service, incident_id, kind, reason, actor, data"
PAUSE_COLUMNS = "service, kind, reason, actor, created_at, until, incident_id"
RELEASE_COLUMNS = (
    "id, service, version, image, digest, config_digest, schema_version, source, recorded_by, live_at, "
    "status, green_at, green_by, green_reason, baseline_p95"
)
RELEASE_FIELDS = tuple(c.strip() for c in RELEASE_COLUMNS.split(","))[1:]
RELEASE_STATUSES = ("deployed", "superseded", "failed", "rolled_back")
HISTORY_COLUMNS = "id, release_id, service, version, ts, change, actor, note"


# One encoder for every row, set up once (a storm writes three a row): rollbackd.jsontext.
dumps: Callable[[Any], str] = one_shot(json.JSONEncoder(separators=(",", ":"), sort_keys=True))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def incident_from_row(row: Mapping[str, Any]) -> Incident:
    return Incident(
        id=row["id"],
        service=row["service"],
        state=IncidentState(row["state"]),
        trigger=Trigger.from_json(loads(row["trigger"])),
        dry_run=bool(row["dry_run"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        abort_requested=bool(row["abort_requested"]),
        plan=loads(row["plan"]),
        context=loads(row["context"]),
        thread=loads(row["thread"]),
        error=row["error"],
    )


def step_from_row(row: Mapping[str, Any]) -> StepRecord:
    return StepRecord(
        incident_id=row["incident_id"],
        index=row["idx"],
        name=row["name"],
        type=row["type"],
        state=StepState(row["state"]),
        attempts=row["attempts"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        output=loads(row["output"]) or {},
        error=row["error"],
    )


VERDICT_KEY = "verdict"


def event_from_row(row: Mapping[str, Any]) -> Event:
    data: JSON = loads(row["data"]) or {}
    reason, verdict = row["reason"], None
    if row["kind"] in VERDICT_KINDS:
        # The verdict is kept in the data; rows written before Event.verdict existed carried it in `reason`.
        verdict = data.get(VERDICT_KEY) or reason
        reason = None
    return Event(
        id=row["id"],
        ts=row["ts"],
        service=row["service"],
        incident_id=row["incident_id"],
        kind=row["kind"],
        reason=reason,
        actor=row["actor"],
        data=data,
        verdict=verdict,
    )


def event_data(event: Event) -> JSON:
    """The stored data of an event: its verdict rides in it (no column of its own, no schema change)."""
    return event.data if event.verdict is None else {**event.data, VERDICT_KEY: event.verdict}


def pause_from_row(row: Mapping[str, Any]) -> Pause:
    return Pause(
        service=row["service"],
        kind=row["kind"],
        reason=row["reason"],
        actor=row["actor"],
        created_at=row["created_at"],
        until=row["until"],
        incident_id=row["incident_id"],
    )


def release_from_row(row: Mapping[str, Any]) -> Release:
    return Release(**{k: row[k] for k in ("id", *RELEASE_FIELDS)})
