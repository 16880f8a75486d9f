"""The runner lives through a Postgres outage mid-step: its journal writes wait (with backoff), /readyz says
why, and when the store is back the incident goes on from its journal point without re-running a
finished step. An outage longer than `incidents.store_outage_limit` pages at once and ends the incident
`failed` (and held) as soon as the store answers: never `running` with nobody running it. Postgres is real;
a TCP proxy between rollbackd and the server cuts or blackholes it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.daemon import WEBHOOK_TOKEN, DaemonProcess, command_service, running_daemon, write_config
from tests.support.pg import drop_database_sync, fresh_database_sync
from tests.support.tcp_proxy import TcpProxy, ThreadedProxy


async def wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        await asyncio.sleep(0.05)


async def get(d: Any, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(d.url + path) as resp:
        return resp.status, await resp.json()


async def webhook(d: Any, payload: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            d.url + "/v1/webhook/alertmanager",
            data=json.dumps(payload),
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 202
        body: dict[str, Any] = await resp.json()
        return body


@pytest.fixture
async def proxy(pg_dsn: str) -> AsyncIterator[TcpProxy]:
    async with TcpProxy("127.0.0.1", 5432) as p:
        yield p


def proxied(pg_dsn: str, proxy: TcpProxy | ThreadedProxy) -> str:
    return pg_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


def gated_plan(tmp_path: Path) -> list[dict[str, Any]]:
    log, gate = tmp_path / "steps.log", tmp_path / "gate"
    slow = f"echo slow-start >> {log}; while [ ! -f {gate} ]; do sleep 0.05; done; echo slow-end >> {log}"
    return [
        {"type": "command", "name": "slow", "argv": ["/bin/sh", "-c", slow]},
        {"type": "command", "name": "after", "argv": ["/bin/sh", "-c", f"echo after >> {log}"]},
    ]


@pytest.mark.parametrize("fault", ["cut", "blackhole"])
async def test_outage_mid_step_is_waited_out_and_nothing_runs_twice(
    tmp_path: Path, pg_dsn: str, proxy: TcpProxy, firing_payload: dict[str, Any], fault: str
) -> None:
    log, gate = tmp_path / "steps.log", tmp_path / "gate"
    cfg = write_config(
        tmp_path,
        services={"rag": command_service(gated_plan(tmp_path))},
        state={"type": "postgres", "dsn": proxied(pg_dsn, proxy), "timeout": 1},
        incidents={"store_outage_limit": "60s"},
    )
    async with running_daemon(cfg) as d:
        await webhook(d, firing_payload)
        await wait_for(lambda: log.exists(), what="step started")
        getattr(proxy, fault)()
        gate.touch()  # the step finishes while its `done` cannot be written
        await wait_for(lambda: "slow-end" in log.read_text(), what="step finished")
        await wait_for(lambda: d.core.runner.journal.outage.since is not None, what="runner waiting")
        status, ready = await get(d, "/readyz")
        # what waits: `step_finished`, or the step's process group (`append_event`) if the cut came first
        assert status == 503 and "the runner is waiting to journal" in ready["runner"], ready
        await asyncio.sleep(1.5)
        assert log.read_text().splitlines() == ["slow-start", "slow-end"]  # nothing went on unrecorded
        proxy.restore()
        (incident,) = await d.core.store.list_incidents(None, 5)
        assert await asyncio.wait_for(d.core.runner.wait(incident.id), 30) is not None
        final = await d.core.store.get_incident(incident.id)
        steps = await d.core.store.steps(incident.id)
        status, _ = await get(d, "/readyz")
    assert final is not None and final.state.value == "resolved", final
    assert [(s.name, s.state.value, s.attempts) for s in steps] == [("slow", "done", 1), ("after", "done", 1)]
    assert log.read_text().splitlines() == ["slow-start", "slow-end", "after"]
    assert status == 200


async def test_outage_past_the_bound_pages_at_once_and_ends_failed_when_the_store_is_back(
    tmp_path: Path, pg_dsn: str, proxy: TcpProxy, firing_payload: dict[str, Any]
) -> None:
    log, gate = tmp_path / "steps.log", tmp_path / "gate"
    pages: list[dict[str, Any]] = []

    async def page(request: web.Request) -> web.Response:
        pages.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/page", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    svc = command_service(gated_plan(tmp_path))
    svc["page_webhook"] = {"url": f"http://127.0.0.1:{port}/page"}
    cfg = write_config(
        tmp_path,
        services={"rag": svc},
        state={"type": "postgres", "dsn": proxied(pg_dsn, proxy), "timeout": 0.5},
        incidents={"store_outage_limit": "2s"},
    )
    try:
        async with running_daemon(cfg) as d:
            await webhook(d, firing_payload)
            await wait_for(lambda: log.exists(), what="step started")
            (incident,) = await d.core.store.list_incidents(None, 5)
            proxy.blackhole()
            gate.touch()
            await wait_for(lambda: bool(pages), timeout=30, what="page")
            assert pages[0]["incident_id"] == incident.id and pages[0]["state"] == "failed"
            assert "state store unreachable" in pages[0]["error"]
            task = d.core.runner._tasks.get(incident.id)
            assert task is not None and not task.done()  # still somebody on it: waiting to record `failed`
            proxy.restore()
            assert await asyncio.wait_for(d.core.runner.wait(incident.id), 30) is not None
            final = await d.core.store.get_incident(incident.id)
            view = await d.core.store.policy_view("rag", time.time(), 3600)
    finally:
        await runner.cleanup()
    assert final is not None and final.state.value == "failed" and "state store unreachable" in (final.error or "")
    assert view.hold is not None and view.hold.incident_id == incident.id
    assert "after" not in log.read_text()


def test_a_restart_during_the_outage_does_not_run_the_finished_step_again(tmp_path: Path) -> None:
    """The step finished while its `done` could not be written; the daemon is killed before the store
    is back. The restarted daemon asks the world (`check`), never guesses: the step is not run again."""
    log, gate, done = tmp_path / "steps.log", tmp_path / "gate", tmp_path / "slow.done"
    slow = f"echo slow-start >> {log}; while [ ! -f {gate} ]; do sleep 0.05; done; touch {done}; echo slow-end >> {log}"
    plan = [
        {"type": "command", "name": "slow", "argv": ["/bin/sh", "-c", slow], "check": ["test", "-f", str(done)]},
        {"type": "command", "name": "after", "argv": ["/bin/sh", "-c", f"echo after >> {log}"]},
    ]
    dsn = fresh_database_sync("outage_restart")
    try:
        with ThreadedProxy("127.0.0.1", 5432) as proxy:
            cfg = write_config(
                tmp_path,
                services={"rag": command_service(plan)},
                state={"type": "postgres", "dsn": proxied(dsn, proxy), "timeout": 1},
            )
            daemon = DaemonProcess(cfg)
            try:
                daemon.start()
                status, body = daemon.api.call("POST", "/v1/trigger", {"reason": "test", "service": "rag"})
                assert status == 202, body
                wait_sync(lambda: log.exists())
                proxy.blackhole()
                gate.touch()
                wait_sync(lambda: "slow-end" in log.read_text())
                time.sleep(1.5)  # the runner is now retrying `done` against a dead store
                daemon.kill9()
                proxy.restore()
                daemon.start()
                final = daemon.api.wait_incident(body["id"], ("resolved", "failed"))
            finally:
                daemon.stop()
    finally:
        drop_database_sync(dsn)
    assert final["state"] == "resolved", final
    assert log.read_text().splitlines() == ["slow-start", "slow-end", "after"]
    assert final["steps"][0]["output"] == {"resumed": True, "found_done": True}


def wait_sync(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.05)
