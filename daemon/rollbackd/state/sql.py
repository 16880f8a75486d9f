"""The journal's queries, shared by both drivers. SQL is written with ``$1`` placeholders; the SQLite
driver rewrites them to ``?1``. A driver implements only ``_connect``, ``_close``, ``_execute``,
``_fetch`` and ``_atomic`` (saq's shape: the base does the work once)."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

from rollbackd import redact
from rollbackd.errors import NotFoundError
from rollbackd.reasons import ACTIVE_STATES, IncidentState, StepState
from rollbackd.records import Alert, Decision, Event, Incident, Pause, PolicyView, StepRecord
from rollbackd.state import schema
from rollbackd.state.bulk import BulkJournal
from rollbackd.state.bulk import Statement as Statement
from rollbackd.state.bulk import alert_insert as _alert_insert
from rollbackd.state.bulk import event_insert as _event_insert
from rollbackd.state.bulk import marks as _marks
from rollbackd.state.release_sql import ReleaseQueries
from rollbackd.state.schema import dumps, loads
from rollbackd.state.versions import Versioned, invalidates

_INCIDENT_UPDATABLE = {
    "state": lambda v: IncidentState(v).value,
    "started_at": float,
    "finished_at": float,
    "abort_requested": int,
    "context": dumps,
    "thread": dumps,
    "error": lambda v: redact.text(str(v), 2000),  # the journal never keeps a secret (rollbackd.redact)
}
# Incidents that count against the budget and start the cooldown: those that actually ran.
_RAN_STATES = tuple(
    s.value
    for s in IncidentState
    if s not in ACTIVE_STATES and s not in (IncidentState.CANCELLED, IncidentState.DRY_RUN)
)


def _incident_insert(incident: Incident) -> Statement:
    return (
        "INSERT INTO rb_incidents (id, service, state, active, auto, dry_run, trigger, created_at, plan,"
        " context) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        (
            incident.id,
            incident.service,
            incident.state.value,
            int(incident.active),
            int(incident.trigger.kind == "alert"),
            int(incident.dry_run),
            dumps(incident.trigger.to_json()),
            incident.created_at,
            dumps(incident.plan),
            dumps(incident.context),
        ),
    )


def _assignments(fields: Mapping[str, Any], first: int) -> tuple[str, list[Any]]:
    """``SET`` clauses for incident fields, placeholders from ``$first``; ``state`` also sets ``active``."""
    sets: list[str] = []
    args: list[Any] = []
    for name, value in fields.items():
        convert: Any = _INCIDENT_UPDATABLE.get(name)
        if convert is None:
            raise ValueError(f"incident field {name!r} cannot be updated")
        args.append(None if value is None else convert(value))
        sets.append(f"{name} = ${first + len(args) - 1}")
        if name == "state":
            sets.append(f"active = {int(IncidentState(value) in ACTIVE_STATES)}")
    return ", ".join(sets), args


class SqlStateStore(ReleaseQueries, BulkJournal, Versioned):
    serial_type = "INTEGER PRIMARY KEY"
    epoch_now = schema.EPOCH_NOW

    # ---- driver ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def _connect(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _execute(self, sql: str, *args: Any) -> None: ...

    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def _atomic(self, statements: Sequence[Statement]) -> list[dict[str, Any]]:
        """Run statements in one transaction; return the rows of the last one."""

    async def _fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    # ---- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        await self._connect()
        await self._atomic([(ddl.format(serial=self.serial_type), ()) for ddl in schema.DDL])
        await self._execute(
            "INSERT INTO rb_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT DO NOTHING",
            str(schema.SCHEMA_VERSION),
        )

    async def close(self) -> None:
        await self._close()

    async def ping(self) -> None:
        await self._fetch("SELECT 1 AS ok")

    # ---- alerts ---------------------------------------------------------------------------------
    async def seen_alert(self, key: str) -> bool:
        return await self._fetchrow("SELECT 1 AS seen FROM rb_alerts WHERE key = $1", key) is not None

    @invalidates(lambda alert, service, received_at, decision, incident, event: incident and incident.service)
    async def journal_alert(
        self,
        alert: Alert,
        service: str | None,
        received_at: float,
        decision: Decision,
        incident: Incident | None,
        event: Event,
    ) -> None:
        """The alert, its decision, the incident it opens and the journal line: all or nothing.
        Raises StateError when another active incident exists for the service (the store's own
        one-active-incident index), so the caller can journal the alert as suppressed instead."""
        statements = [_alert_insert(alert, service, received_at, decision, incident)]
        if incident is not None:
            statements.append(_incident_insert(incident))
        statements.append(_event_insert(event))
        await self._atomic(statements)

    async def set_alert_decision(self, key: str, decision: Decision, incident_id: str | None) -> None:
        await self._execute(
            "UPDATE rb_alerts SET action = $2, reason = $3, incident_id = $4 WHERE key = $1",
            key,
            decision.action.value,
            decision.reason.value,
            incident_id,
        )

    async def add_duplicates(self, counts: Mapping[str, int]) -> None:
        if counts:
            await self._atomic(
                [
                    ("UPDATE rb_alerts SET duplicates = duplicates + $2 WHERE key = $1", (k, n))
                    for k, n in counts.items()
                ]
            )

    async def recent_alerts(self, service: str | None, limit: int) -> list[dict[str, Any]]:
        where, args = ("WHERE service = $2", [service]) if service else ("", [])
        rows = await self._fetch(
            "SELECT key, service, fingerprint, alertname, status, starts_at, received_at, labels, action,"
            f" reason, incident_id, duplicates FROM rb_alerts {where} ORDER BY received_at DESC LIMIT $1",
            limit,
            *args,
        )
        for row in rows:
            row["labels"] = loads(row["labels"])
        return rows

    # ---- incidents ------------------------------------------------------------------------------
    @invalidates(lambda incident: incident.service)
    async def create_incident(self, incident: Incident) -> bool:
        sql, args = _incident_insert(incident)
        row = await self._fetchrow(sql + " ON CONFLICT DO NOTHING RETURNING id", *args)
        return row is not None

    @invalidates()
    async def transition(
        self, incident_id: str, from_states: tuple[IncidentState, ...], to: IncidentState, **fields: Any
    ) -> Incident | None:
        """Move an incident to ``to`` only if it is still in one of ``from_states`` (compare-and-set),
        with ``fields`` in the same write: no reader sees the new state without them."""
        sets, args = _assignments({"state": to, **fields}, first=2)
        marks = _marks(2 + len(args), len(from_states))
        rows = await self._fetch(
            f"UPDATE rb_incidents SET {sets} WHERE id = $1 AND state IN ({marks}) RETURNING id",
            incident_id,
            *args,
            *(s.value for s in from_states),
        )
        return await self.get_incident(incident_id) if rows else None

    async def get_incident(self, incident_id: str) -> Incident | None:
        row = await self._fetchrow(f"SELECT {schema.INCIDENT_COLUMNS} FROM rb_incidents WHERE id = $1", incident_id)
        return schema.incident_from_row(row) if row else None

    async def list_incidents(self, service: str | None, limit: int) -> list[Incident]:
        where, args = ("WHERE service = $2", [service]) if service else ("", [])
        rows = await self._fetch(
            f"SELECT {schema.INCIDENT_COLUMNS} FROM rb_incidents {where} ORDER BY created_at DESC LIMIT $1",
            limit,
            *args,
        )
        return [schema.incident_from_row(r) for r in rows]

    async def active_incidents(self) -> list[Incident]:
        rows = await self._fetch(
            f"SELECT {schema.INCIDENT_COLUMNS} FROM rb_incidents WHERE active = 1 ORDER BY created_at"
        )
        return [schema.incident_from_row(r) for r in rows]

    @invalidates()
    async def update_incident(self, incident_id: str, **fields: Any) -> Incident:
        sets, args = _assignments(fields, first=2)
        rows = await self._atomic(
            [
                (f"UPDATE rb_incidents SET {sets} WHERE id = $1", (incident_id, *args)),
                (f"SELECT {schema.INCIDENT_COLUMNS} FROM rb_incidents WHERE id = $1", (incident_id,)),
            ]
        )
        if not rows:
            raise NotFoundError(f"no incident {incident_id}")
        return schema.incident_from_row(rows[0])

    async def step_started(self, incident_id: str, index: int, name: str, type_: str, attempt: int, ts: float) -> None:
        await self._execute(
            "INSERT INTO rb_steps (incident_id, idx, name, type, state, attempts, started_at, output)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,'{}') ON CONFLICT (incident_id, idx) DO UPDATE SET"
            " state = excluded.state, attempts = excluded.attempts, started_at = excluded.started_at,"
            " finished_at = NULL, error = NULL",
            incident_id,
            index,
            name,
            type_,
            StepState.STARTED.value,
            attempt,
            ts,
        )

    async def step_finished(
        self,
        incident_id: str,
        index: int,
        state: StepState,
        ts: float,
        output: Mapping[str, Any],
        error: str | None,
    ) -> None:
        await self._execute(
            "UPDATE rb_steps SET state = $3, finished_at = $4, output = $5, error = $6"
            " WHERE incident_id = $1 AND idx = $2",
            incident_id,
            index,
            state.value,
            ts,
            dumps(redact.data(dict(output))),
            error and redact.text(error, 2000),
        )

    async def steps(self, incident_id: str) -> list[StepRecord]:
        rows = await self._fetch(
            f"SELECT {schema.STEP_COLUMNS} FROM rb_steps WHERE incident_id = $1 ORDER BY idx", incident_id
        )
        return [schema.step_from_row(r) for r in rows]

    # ---- events ---------------------------------------------------------------------------------
    async def append_event(self, event: Event) -> int:
        sql, args = _event_insert(event)
        row = await self._fetchrow(sql + " RETURNING id", *args)
        assert row is not None
        return int(row["id"])

    async def events(
        self,
        *,
        service: str | None = None,
        kinds: tuple[str, ...] = (),
        incident_id: str | None = None,
        limit: int = 50,
    ) -> list[Event]:
        clauses: list[str] = []
        args: list[Any] = [limit]
        if service is not None:
            args.append(service)
            clauses.append(f"service = ${len(args)}")
        if incident_id is not None:
            args.append(incident_id)
            clauses.append(f"incident_id = ${len(args)}")
        if kinds:
            marks = []
            for kind in kinds:
                args.append(kind)
                marks.append(f"${len(args)}")
            clauses.append(f"kind IN ({', '.join(marks)})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._fetch(
            f"SELECT {schema.EVENT_COLUMNS} FROM rb_events {where} ORDER BY id DESC LIMIT $1", *args
        )
        return [schema.event_from_row(r) for r in rows]

    # ---- pauses, holds and the policy's view ----------------------------------------------------
    @invalidates(lambda pause: pause.service)
    async def set_pause(self, pause: Pause) -> None:
        await self._execute(
            f"INSERT INTO rb_pauses ({schema.PAUSE_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7)"
            " ON CONFLICT (service, kind) DO UPDATE SET reason = excluded.reason, actor = excluded.actor,"
            " created_at = excluded.created_at, until = excluded.until, incident_id = excluded.incident_id",
            pause.service,
            pause.kind,
            pause.reason,
            pause.actor,
            pause.created_at,
            pause.until,
            pause.incident_id,
        )

    @invalidates(lambda service, kinds=(): service)
    async def clear_pauses(self, service: str, kinds: tuple[str, ...] = ("pause", "hold")) -> int:
        rows = await self._fetch(
            f"DELETE FROM rb_pauses WHERE service = $1 AND kind IN ({_marks(2, len(kinds))}) RETURNING service",
            service,
            *kinds,
        )
        return len(rows)

    async def pauses(self) -> list[Pause]:
        rows = await self._fetch(f"SELECT {schema.PAUSE_COLUMNS} FROM rb_pauses ORDER BY service, kind")
        return [schema.pause_from_row(r) for r in rows]

    async def policy_view(self, service: str, now: float, window: float) -> PolicyView:
        ran = _marks(3, len(_RAN_STATES))
        counted = f"FROM rb_incidents WHERE service = $1 AND auto = 1 AND dry_run = 0 AND state IN ({ran})"
        row = await self._fetchrow(  # one round trip: a decision under load waits for each one
            "SELECT (SELECT id FROM rb_incidents WHERE service = $1 AND active = 1 LIMIT 1) AS active,"
            f" (SELECT COUNT(*) {counted} AND created_at >= $2) AS n, (SELECT MAX(finished_at) {counted}) AS last_end",
            service,
            now - window,
            *_RAN_STATES,
        )
        assert row is not None
        pauses = [p for p in await self.pauses() if p.service in (service, "*") and p.in_force(now)]
        return PolicyView(
            service=service,
            active_incident=row["active"],
            pause=next((p for p in pauses if p.kind == "pause"), None),
            hold=next((p for p in pauses if p.kind == "hold"), None),
            auto_rollbacks_in_window=int(row["n"] or 0),
            last_auto_rollback_end=row["last_end"],
            has_target=None,
        )

    # ---- replicas (rollbackd.ha) ----------------------------------------------------------------
    async def replicas(self) -> dict[str, Any]:
        """The lease row (who leads, since, until; server epoch seconds) and every replica's heartbeat."""
        leader = await self._fetchrow("SELECT holder, token, since, expires_at FROM rb_leader WHERE name = 'leader'")
        rows = await self._fetch(
            "SELECT id, host, pid, listen, started_at, heartbeat_at, leader_since FROM rb_replicas ORDER BY id"
        )
        now = await self._fetchrow(f"SELECT {self.epoch_now} AS now")
        return {"leader": leader, "replicas": rows, "now": now["now"] if now else None}

    # ---- kv -------------------------------------------------------------------------------------
    async def get_kv(self, key: str) -> Any:
        row = await self._fetchrow("SELECT value FROM rb_kv WHERE key = $1", key)
        return loads(row["value"]) if row else None

    async def set_kv(self, key: str, value: Any) -> None:
        await self._execute(
            "INSERT INTO rb_kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            dumps(value),
        )

    async def add_kv(self, key: str, value: Any) -> Any:
        await self._execute(
            "INSERT INTO rb_kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, dumps(value)
        )
        return await self.get_kv(key)  # a kv key is never removed: the row read is the first writer's
