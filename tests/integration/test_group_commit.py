"""Group commit across requests: a 202 still means "journaled". A real daemon takes a storm of distinct
alerts from many concurrent clients and is killed -9 in the middle of it, several times on the same
journal; afterwards every alert that was answered 202 is in the journal (SQLite and Postgres)."""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import load_fixture, relabel
from tests.support.daemon import WEBHOOK_TOKEN, DaemonProcess, command_service, secret_ref, write_config
from tests.support.pg import drop_database_sync, fresh_database_sync

CLIENTS = 24
ROUNDS = 3


def storm_body(tag: str) -> bytes:
    payload = relabel(load_fixture("alertmanager-0.25-firing.json"), alertname="StormNoise", service="rag")
    body = copy.deepcopy(payload)
    body["groupKey"] = f'{{}}:{{alertname="StormNoise", n="{tag}"}}'
    for alert in body["alerts"]:
        alert["fingerprint"] = tag
        alert["labels"]["n"] = tag
    return json.dumps(body).encode()


def client(port: int, name: str, stop: threading.Event, accepted: list[str]) -> None:
    """Posts distinct alerts one after another on a keep-alive connection; records those answered 202."""
    n = 0
    while not stop.is_set():
        tag = f"{name}x{n:06d}"
        n += 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(
                "POST",
                "/v1/webhook/alertmanager",
                storm_body(tag),
                {"Content-Type": "application/json", "Authorization": f"Bearer {WEBHOOK_TOKEN}"},
            )
            status = conn.getresponse().status
        except OSError:  # the daemon died under us: this one was never answered 202
            return
        finally:
            conn.close()
        if status == 202:
            accepted.append(tag)


def storm_then_kill(daemon: DaemonProcess, round_: int, seconds: float) -> list[str]:
    daemon.start()
    port = int(daemon.url.rsplit(":", 1)[1])
    stop = threading.Event()
    accepted: list[str] = []
    threads = [
        threading.Thread(target=client, args=(port, f"r{round_}c{c}", stop, accepted), daemon=True)
        for c in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    daemon.kill9()  # mid-storm: commits in flight, batches waiting
    stop.set()
    for thread in threads:
        thread.join(10)
    return accepted


def journaled_sqlite(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT fingerprint FROM rb_alerts")}


def journaled_postgres(dsn: str) -> set[str]:
    async def read() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            return {r["fingerprint"] for r in await conn.fetch("SELECT fingerprint FROM rb_alerts")}
        finally:
            await conn.close()

    return asyncio.run(read())


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_kill9_during_distinct_storm_every_202_is_journaled(tmp_path: Path, store: str) -> None:
    dsn = fresh_database_sync("groupkill") if store == "postgres" else None
    state: dict[str, Any] = (
        {"type": "postgres", "dsn": secret_ref("GROUP_KILL_DSN", dsn)}
        if dsn
        else {"type": "sqlite", "path": str(tmp_path / "state.db")}
    )
    service = command_service(
        [{"type": "command", "name": "noop", "argv": ["/bin/true"]}], notify_alerts=["StormNoise"]
    )
    daemon = DaemonProcess(
        write_config(tmp_path, services={"rag": service}, state=state), env={"ROLLBACKD_LOG_LEVEL": "warning"}
    )
    try:
        accepted = [tag for r in range(ROUNDS) for tag in storm_then_kill(daemon, r, 1.0 + 0.4 * r)]
        journaled = journaled_postgres(dsn) if dsn else journaled_sqlite(tmp_path / "state.db")
    finally:
        daemon.stop()
        if dsn:
            drop_database_sync(dsn)
    assert len(accepted) > 100, len(accepted)  # a storm, not a trickle
    missing = sorted(set(accepted) - journaled)
    assert missing == [], f"{len(missing)} of {len(accepted)} answered 202 but not journaled: {missing[:5]}"
