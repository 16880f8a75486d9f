"""A store error while an alert is journaled is an outage, never "incident active": the webhook answers
503 with Retry-After (Alertmanager re-sends), the error is logged with its traceback, and the re-send
opens the incident. Real SQLite (a second writer, an injected "database is locked") and real Postgres
(a table lock past the store's timeout)."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.daemon import WEBHOOK_TOKEN, command_service, running_daemon, write_config

PATH = "/v1/webhook/alertmanager"


async def post(d: Any, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            d.url + PATH,
            data=json.dumps(payload),
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
        ) as resp,
    ):
        return resp.status, await resp.json(), dict(resp.headers)


def config(tmp_path: Path, state: dict[str, Any]) -> Path:
    plan = [{"type": "command", "name": "mark", "argv": ["/bin/true"]}]
    return write_config(tmp_path, services={"rag": command_service(plan)}, state=state)


async def assert_outage_then_resend_opens(
    d: Any, payload: dict[str, Any], caplog: pytest.LogCaptureFixture, heal: Any
) -> None:
    status, body, headers = await post(d, payload)
    assert status == 503, body
    assert body["error"] == "unavailable" and "state store" in body["detail"]
    assert int(headers["Retry-After"]) > 0
    (logged,) = [r for r in caplog.records if r.getMessage() == "store_error"]
    assert logged.levelno == logging.ERROR and logged.exc_info is not None
    await heal()
    assert await d.core.store.list_incidents(None, 10) == []  # nothing half-written
    assert await d.core.store.recent_alerts(None, 10) == []
    status, body, _ = await post(d, payload)  # what Alertmanager does after a 5xx
    assert status == 202 and body["decisions"][0]["action"] == "rollback", body
    (incident,) = await d.core.store.list_incidents(None, 10)
    assert (await d.core.runner.wait(incident.id)) is not None
    final = await d.core.store.get_incident(incident.id)
    assert final is not None and final.state.value == "resolved"


async def test_sqlite_held_by_another_writer_answers_503_then_the_resend_opens(
    tmp_path: Path, firing_payload: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "state.db"
    cfg = config(tmp_path, {"type": "sqlite", "path": str(db), "busy_timeout": "0.2s"})
    async with running_daemon(cfg) as d:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the journal longer than busy_timeout

        async def release() -> None:
            other.execute("ROLLBACK")
            other.close()

        await assert_outage_then_resend_opens(d, firing_payload, caplog, release)


class _LockedOnce:
    """The SQLite connection, except that the next transaction fails with "database is locked"."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.armed = True

    def execute(self, sql: str, *args: Any) -> Any:
        if self.armed and sql == "BEGIN IMMEDIATE":
            self.armed = False
            raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_one_injected_database_is_locked_answers_503_then_the_resend_opens(
    tmp_path: Path, firing_payload: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path, {"type": "sqlite", "path": str(tmp_path / "state.db")})
    async with running_daemon(cfg) as d:
        real = d.core.store._conn
        d.core.store._conn = _LockedOnce(real)

        async def nothing() -> None:
            return None

        await assert_outage_then_resend_opens(d, firing_payload, caplog, nothing)
        d.core.store._conn = real


async def test_postgres_locked_past_its_timeout_answers_503_then_the_resend_opens(
    tmp_path: Path, pg_dsn: str, firing_payload: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path, {"type": "postgres", "dsn": pg_dsn, "timeout": 0.5})
    async with running_daemon(cfg) as d:
        other = await asyncpg.connect(pg_dsn)
        tx = other.transaction()
        await tx.start()
        await other.execute("LOCK TABLE rb_alerts IN ACCESS EXCLUSIVE MODE")  # a write stuck behind it

        async def release() -> None:
            await tx.rollback()
            await other.close()

        try:
            await assert_outage_then_resend_opens(d, firing_payload, caplog, release)
        finally:
            if not other.is_closed():
                await other.close()


async def test_the_constraint_alone_reads_as_incident_active(tmp_path: Path, firing_payload: dict[str, Any]) -> None:
    """An HA peer opened an incident of the service between the policy's read and the write: the alert
    is journaled as suppressed (incident_active), and that is the only store error that does so."""
    from tests.contracts.state_stores import incident

    cfg = config(tmp_path, {"type": "sqlite", "path": str(tmp_path / "state.db")})
    async with running_daemon(cfg) as d:
        store = d.core.store
        real_view = store.policy_view

        async def view_then_peer(service: str, now: float, window: float) -> Any:
            seen = await real_view(service, now, window)
            await store.create_incident(incident("peer-1", service))  # the peer wins the race
            return seen

        store.policy_view = view_then_peer
        status, body, _ = await post(d, firing_payload)
    assert status == 202
    assert (body["decisions"][0]["action"], body["decisions"][0]["reason"]) == ("suppressed", "incident_active")
