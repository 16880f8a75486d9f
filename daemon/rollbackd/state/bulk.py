"""Journal work done per batch, not per row: the alerts of one webhook body (one query for the keys
already journaled, one transaction for the rows) and the statements both drivers share to write them."""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Sequence
from typing import Any

from rollbackd.records import Alert, Decision, Event, Incident
from rollbackd.state.schema import dumps, event_data

Statement = tuple[str, Sequence[Any]]


_ALERT_INSERT = (
    "INSERT INTO rb_alerts (key, service, fingerprint, alertname, status, starts_at, received_at,"
    " labels, annotations, action, reason, incident_id) VALUES "
)
_EVENT_INSERT = "INSERT INTO rb_events (ts, service, incident_id, kind, reason, actor, data) VALUES "
_ROWS_PER_INSERT = 500  # 12 parameters a row: well under both drivers' limit on parameters


def _alert_args(
    alert: Alert, service: str | None, received_at: float, decision: Decision, incident: Incident | None
) -> tuple[Any, ...]:
    return (
        alert.key,
        service,
        alert.fingerprint,
        alert.alertname,
        alert.status,
        alert.starts_at.isoformat(),
        received_at,
        dumps(dict(alert.labels)),
        dumps(dict(alert.annotations)),
        decision.action.value,
        decision.reason.value,
        incident.id if incident else None,
    )


def _event_args(event: Event) -> tuple[Any, ...]:
    return (event.ts, event.service, event.incident_id, event.kind, event.reason, event.actor, dumps(event_data(event)))


def alert_insert(
    alert: Alert, service: str | None, received_at: float, decision: Decision, incident: Incident | None
) -> Statement:
    return _ALERT_INSERT + f"({marks(1, 12)}) ON CONFLICT DO NOTHING", _alert_args(
        alert, service, received_at, decision, incident
    )


def multi_insert(head: str, rows: Sequence[tuple[Any, ...]], tail: str = "") -> list[Statement]:
    """One INSERT of many rows per chunk: a batch of a thousand alerts is a few statements, not a
    thousand round trips (Postgres runs each statement of a transaction as its own round trip)."""
    statements: list[Statement] = []
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        statements.append((_multi_sql(head, len(chunk[0]), len(chunk), tail), [arg for row in chunk for arg in row]))
    return statements


@functools.lru_cache(maxsize=1024)
def _multi_sql(head: str, width: int, count: int, tail: str) -> str:
    """The text of a ``count``-row INSERT: the same few texts again and again in a storm (and the same
    string object, whose hash and rewrite the SQLite driver caches)."""
    return head + ", ".join(f"({marks(1 + i * width, width)})" for i in range(count)) + tail


def alerts_with_lines(unique: Sequence[tuple[Alert, str | None, float, Decision, Event]]) -> Statement:
    """One statement (Postgres: data-modifying CTEs) inserting the alerts and the journal lines of the
    new ones, returning the new keys: one round trip where a transaction takes four."""
    args: list[Any] = []
    for alert, service, at, decision, _ in unique:
        args.extend(_alert_args(alert, service, at, decision, None))
    for alert, _, _, _, event in unique:
        args.append(alert.key)
        args.extend(_event_args(event))
    return _cte_sql(len(unique)), args


@functools.lru_cache(maxsize=1024)
def _cte_sql(count: int) -> str:
    alerts = _multi_sql(_ALERT_INSERT, 12, count, " ON CONFLICT DO NOTHING RETURNING key")
    first = 12 * count + 1
    casts = ("text", "float8", "text", "text", "text", "text", "text", "text")  # key, then rb_events' columns
    lines = ", ".join(
        "(" + ", ".join(f"${first + 8 * i + c}::{cast}" for c, cast in enumerate(casts)) + f", {i})"
        for i in range(count)
    )
    return (
        f"WITH new AS ({alerts}), lines AS (INSERT INTO rb_events (ts, service, incident_id, kind, reason, actor, data)"
        " SELECT e.ts, e.service, e.incident_id, e.kind, e.reason, e.actor, e.data"
        f" FROM (VALUES {lines}) AS e(key, ts, service, incident_id, kind, reason, actor, data, ord)"
        " JOIN new ON new.key = e.key ORDER BY e.ord) SELECT key FROM new"
    )


def event_insert(event: Event) -> Statement:
    return _EVENT_INSERT + f"({marks(1, 7)})", _event_args(event)


def marks(first: int, count: int) -> str:
    """``$first, ..., $(first+count-1)``."""
    return ", ".join(f"${first + i}" for i in range(count))


class BulkJournal(abc.ABC):
    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def _atomic(self, statements: Sequence[Statement]) -> list[dict[str, Any]]:
        """Run statements in one transaction; return the rows of the last one."""

    async def seen_alerts(self, keys: Sequence[str]) -> set[str]:
        """The keys among ``keys`` already journaled: one query per 500, not one per alert."""
        chunks = [keys[i : i + 500] for i in range(0, len(keys), 500)]
        return {
            r["key"]
            for c in chunks
            for r in await self._fetch(f"SELECT key FROM rb_alerts WHERE key IN ({marks(1, len(c))})", *c)
        }

    @abc.abstractmethod
    async def _atomic_then(
        self, first: Sequence[Statement], then: Callable[[list[dict[str, Any]]], Sequence[Statement]]
    ) -> list[dict[str, Any]]:
        """In one transaction: ``first``, then the statements ``then`` makes of all their rows; returns those rows."""

    async def journal_alerts(self, rows: Sequence[tuple[Alert, str | None, float, Decision, Event]]) -> list[bool]:
        """Alerts that open no incident, with decisions and journal lines: one commit per batch
        (a webhook body, or the bodies of concurrent requests: rollbackd.state.group). Returns, per
        row, whether it was new: an alert the journal already held (an earlier life of the daemon, an
        HA peer, or a row earlier in the batch) is left as it was and gets no journal line, so the
        caller learns it is a duplicate from this very insert, without reading first."""
        if not rows:
            return []
        first_of: dict[str, int] = {}
        for at, row in enumerate(rows):
            first_of.setdefault(row[0].key, at)
        new = await self._journal_unique([rows[at] for at in first_of.values()])
        return [first_of[row[0].key] == at and row[0].key in new for at, row in enumerate(rows)]

    async def _journal_unique(self, unique: Sequence[tuple[Alert, str | None, float, Decision, Event]]) -> set[str]:
        """Insert rows of distinct keys and the journal lines of the new ones, in one transaction;
        return the new keys."""

        def lines(inserted: list[dict[str, Any]]) -> list[Statement]:
            new = {r["key"] for r in inserted}
            return multi_insert(_EVENT_INSERT, [_event_args(row[4]) for row in unique if row[0].key in new])

        alerts = [_alert_args(alert, service, at, decision, None) for alert, service, at, decision, _ in unique]
        inserted = await self._atomic_then(
            multi_insert(_ALERT_INSERT, alerts, " ON CONFLICT DO NOTHING RETURNING key"), lines
        )
        return {r["key"] for r in inserted}

    async def prune_journal(self, before: float) -> dict[str, int]:
        """Delete alert and event rows older than ``before`` that no incident refers to (incidents, their
        steps and events are kept). A firing alert row goes only once its resolution is journaled too:
        pruned sooner, a copy Alertmanager re-sends would be decided again as a new alert."""
        unlinked = "received_at < $1 AND incident_id IS NULL"
        counts: dict[str, int] = {}
        for name, sql in (
            (
                "alerts_firing",
                f"DELETE FROM rb_alerts WHERE {unlinked} AND status = 'firing' AND EXISTS (SELECT 1"
                " FROM rb_alerts r WHERE r.fingerprint = rb_alerts.fingerprint AND r.status = 'resolved'"
                " AND r.starts_at = rb_alerts.starts_at)",
            ),
            ("alerts_resolved", f"DELETE FROM rb_alerts WHERE {unlinked} AND status = 'resolved'"),
            ("events", "DELETE FROM rb_events WHERE ts < $1 AND incident_id IS NULL"),
        ):
            counts[name] = len(await self._atomic([(sql + " RETURNING 1 AS gone", (before,))]))
        return counts
