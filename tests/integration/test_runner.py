"""The incident engine: parallel groups, timeouts, retries with backoff, abort, http steps, the
environment a command sees, dry runs, holds after failure, budget and cooldown, paging."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import relabel
from tests.support.daemon import API_TOKEN, WEBHOOK_TOKEN, command_service, running_daemon, secret_ref, write_config


async def webhook(d: Any, payload: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            d.url + "/v1/webhook/alertmanager",
            data=json.dumps(payload),
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 202
        body: dict[str, Any] = await r.json()
        return body


async def api(d: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, d.url + path, json=body, headers={"Authorization": f"Bearer {API_TOKEN}"}) as r,
    ):
        return r.status, await r.json()


async def only_incident(d: Any) -> Any:
    (incident,) = await d.core.store.list_incidents(None, 10)
    await d.core.runner.wait(incident.id)
    return await d.core.store.get_incident(incident.id), await d.core.store.steps(incident.id)


def fresh(payload: dict[str, Any], fingerprint: str, **labels: str) -> dict[str, Any]:
    out = relabel(payload, **labels) if labels else json.loads(json.dumps(payload))
    out["alerts"][0]["fingerprint"] = fingerprint
    return out


async def test_parallel_group_runs_together(tmp_path: Path, firing_payload: dict[str, Any]) -> None:
    # Each branch waits for the other's marker: only a real parallel run finishes.
    a, b = tmp_path / "a", tmp_path / "b"

    def waits(mine: Path, other: Path) -> list[str]:
        return ["/bin/sh", "-c", f"touch {mine}; while [ ! -f {other} ]; do sleep 0.02; done"]

    plan = [
        {
            "parallel": [
                {"type": "command", "name": "left", "argv": waits(a, b), "timeout": "20s"},
                {"type": "command", "name": "right", "argv": waits(b, a), "timeout": "20s"},
            ]
        },
        {"type": "command", "name": "after", "argv": ["/bin/true"]},
    ]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    async with running_daemon(cfg) as d:
        await webhook(d, firing_payload)
        incident, steps = await only_incident(d)
    assert incident.state.value == "resolved"
    assert [(s.index, s.name, s.state.value) for s in steps] == [
        (0, "left", "done"),
        (1, "right", "done"),
        (2, "after", "done"),
    ]


async def test_timeout_then_retry_with_backoff(tmp_path: Path, firing_payload: dict[str, Any]) -> None:
    count = tmp_path / "count"
    # First attempt hangs past the timeout, the second succeeds.
    script = f'echo x >> {count}; [ "$(wc -l < {count})" -ge 2 ] || sleep 30'
    plan = [
        {
            "type": "command",
            "name": "flaky",
            "argv": ["/bin/sh", "-c", script],
            "timeout": "0.5s",
            "retries": 2,
            "backoff": "0.1s",
        }
    ]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    async with running_daemon(cfg) as d:
        await webhook(d, firing_payload)
        incident, (step,) = await only_incident(d)
    assert incident.state.value == "resolved" and step.attempts == 2


async def test_retries_exhausted_fail_and_hold_the_service(tmp_path: Path, firing_payload: dict[str, Any]) -> None:
    plan = [
        {
            "type": "command",
            "name": "broken",
            "argv": ["/bin/sh", "-c", "echo nope >&2; exit 7"],
            "retries": 1,
            "backoff": "0.05s",
        },
        {"type": "command", "name": "never", "argv": ["/bin/true"]},
    ]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    async with running_daemon(cfg) as d:
        await webhook(d, firing_payload)
        incident, steps = await only_incident(d)
        assert incident.state.value == "failed" and "exited 7: nope" in incident.error
        assert [s.name for s in steps] == ["broken"] and steps[0].attempts == 2
        body = await webhook(d, fresh(firing_payload, "f0000002"))
        assert body["decisions"][0]["reason"] == "held"
        _, status = await api(d, "GET", "/v1/status")
        assert status["services"]["rag"]["held"]["incident_id"] == incident.id
        assert (await api(d, "POST", "/v1/resume", {"service": "rag", "reason": "looked at it"}))[0] == 200
        body = await webhook(d, fresh(firing_payload, "f0000003"))
        assert body["decisions"][0]["reason"] == "cooldown"  # the failed rollback still started the cooldown


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def test_abort_stops_the_hung_step_and_kills_its_process_group(
    tmp_path: Path, firing_payload: dict[str, Any]
) -> None:
    # The step hangs in a grandchild that also holds stdout: abort must still stop it, at once.
    pids = tmp_path / "pids"
    script = f"sleep 3600 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; wait"
    plan = [
        {"type": "command", "name": "current", "argv": ["/bin/sh", "-c", script]},
        {"type": "command", "name": "next", "argv": ["/bin/true"]},
    ]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)}, incidents={"kill_grace": "1s"})
    async with running_daemon(cfg) as d:
        await webhook(d, firing_payload)
        while not pids.exists():
            await asyncio.sleep(0.02)
        shell, sleeper = (int(p) for p in pids.read_text().split())
        (incident,) = await d.core.store.list_incidents(None, 5)
        asked = time.monotonic()
        status, body = await api(d, "POST", f"/v1/incidents/{incident.id}/abort", {"reason": "wrong alert"})
        assert status == 202 and body["abort_requested"] and body["state"] == "aborted", body
        assert time.monotonic() - asked < 10  # liveness: not the hour the step would sleep
        incident, steps = await only_incident(d)
        events = await d.core.store.events(incident_id=incident.id)
    assert incident.state.value == "aborted"
    assert [(s.name, s.state.value, s.error) for s in steps] == [("current", "failed", "stopped by abort")]
    assert not alive(shell) and not alive(sleeper)
    assert any(e.kind == "abort" and e.actor == "tester" and e.data["why"] == "wrong alert" for e in events)


async def test_command_sees_alert_fields_as_environment_never_as_code(
    tmp_path: Path, firing_payload: dict[str, Any]
) -> None:
    out = tmp_path / "env.json"
    nasty = '$(touch /tmp/rollbackd-pwned); `id`; "quoted"'
    payload = relabel(firing_payload, instance=nasty)
    code = (
        "import json, os; json.dump({k: v for k, v in os.environ.items() if k.startswith('ROLLBACKD_')}, "
        f"open('{out}', 'w'))"
    )
    plan = [{"type": "command", "name": "dump", "argv": ["/usr/bin/env", "python3", "-c", code]}]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    async with running_daemon(cfg) as d:
        await webhook(d, payload)
        incident, _ = await only_incident(d)
    env = json.loads(out.read_text())
    assert env["ROLLBACKD_LABEL_INSTANCE"] == nasty
    assert env["ROLLBACKD_ALERTNAME"] == "RAGGateFailRateHigh" and env["ROLLBACKD_INCIDENT_ID"] == incident.id
    assert env["ROLLBACKD_SERVICE"] == "rag" and env["ROLLBACKD_ATTEMPT"] == "1"
    assert not Path("/tmp/rollbackd-pwned").exists()


async def test_http_step_with_template_expected_status_and_check(
    tmp_path: Path, firing_payload: dict[str, Any]
) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append({"path": request.path, "auth": request.headers.get("X-Key"), "body": await request.json()})
        return web.json_response({"ok": True}, status=201 if request.path == "/switch" else 500)

    app = web.Application()
    app.router.add_post("/switch", handler)
    app.router.add_post("/broken", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    plan = [
        {
            "type": "http",
            "name": "switch",
            "url": f"http://127.0.0.1:{port}/switch",
            "headers": {"X-Key": "k1"},
            "json_body": {"incident": "$incident_id", "service": "$service", "note": "$label_instance"},
            "expect_status": [201],
        },
        {"type": "http", "name": "broken", "url": f"http://127.0.0.1:{port}/broken", "retries": 1, "backoff": "0.05s"},
    ]
    try:
        cfg = write_config(tmp_path, services={"rag": command_service(plan)})
        async with running_daemon(cfg) as d:
            await webhook(d, relabel(firing_payload, instance='a"b'))
            incident, steps = await only_incident(d)
    finally:
        await runner.cleanup()
    assert seen[0] == {
        "path": "/switch",
        "auth": "k1",
        "body": {"incident": incident.id, "service": "rag", "note": 'a"b'},
    }
    assert steps[0].state.value == "done" and steps[0].output["status"] == 201
    assert incident.state.value == "failed" and "HTTP 500" in steps[1].error and steps[1].attempts == 2


async def test_dry_run_mode_journals_the_plan_and_changes_nothing(
    tmp_path: Path, firing_payload: dict[str, Any]
) -> None:
    marker = tmp_path / "ran"
    plan = [{"type": "command", "name": "touch", "argv": ["/usr/bin/touch", str(marker)]}]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)}, mode="dry_run")
    async with running_daemon(cfg) as d:
        body = await webhook(d, firing_payload)
        assert body["decisions"][0]["reason"] == "dry_run"
        incident, (step,) = await only_incident(d)
        assert incident.state.value == "dry_run" and incident.dry_run
        assert step.state.value == "skipped" and step.output == {"would": f"run /usr/bin/touch {marker}"}
        # a dry run neither spends budget nor starts the cooldown
        body = await webhook(d, fresh(firing_payload, "f0000009"))
        assert body["decisions"][0]["reason"] == "dry_run"
    assert not marker.exists()


async def test_budget_exhausted_then_escalates(tmp_path: Path, firing_payload: dict[str, Any]) -> None:
    plan = [{"type": "command", "name": "ok", "argv": ["/bin/true"]}]
    cfg = write_config(tmp_path, services={"rag": command_service(plan, cooldown="0s", budget={"max": 2})})
    async with running_daemon(cfg) as d:
        for n in range(2):
            await webhook(d, fresh(firing_payload, f"b000000{n}"))
            (latest, *_) = await d.core.store.list_incidents("rag", 5)
            await d.core.runner.wait(latest.id)
        body = await webhook(d, fresh(firing_payload, "b0000009"))
        assert body["decisions"][0]["reason"] == "budget_exhausted"
        await d.core.notify.drain()
        escalations = [m for m in d.core.notify._default.posted if m.kind == "escalation"]
        assert escalations and "budget" in escalations[0].text
        _, status = await api(d, "GET", "/v1/status")
        assert status["services"]["rag"]["budget"]["remaining"] == 0


async def test_pause_blocks_automatic_but_not_manual(tmp_path: Path, firing_payload: dict[str, Any]) -> None:
    plan = [{"type": "command", "name": "ok", "argv": ["/bin/true"]}]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    async with running_daemon(cfg) as d:
        status, body = await api(d, "POST", "/v1/pause", {"reason": "migration tonight", "for": "1h"})
        assert status == 200 and body["service"] == "*"
        assert (await webhook(d, firing_payload))["decisions"][0]["reason"] == "paused"
        status, incident = await api(d, "POST", "/v1/trigger", {"reason": "on-call decided", "service": "rag"})
        assert status == 202 and incident["trigger"]["kind"] == "manual"
        assert (await d.core.runner.wait(incident["id"])).value == "resolved"
        status, body = await api(d, "POST", "/v1/trigger", {"reason": "x", "service": "nope"})
        assert status == 400 and body["field"] == "service"
        status, body = await api(d, "POST", "/v1/pause", {"reason": "", "for": "1h"})
        assert status == 400 and body["field"] == "reason"


async def test_page_webhook_gets_the_documented_body(tmp_path: Path, firing_payload: dict[str, Any]) -> None:
    pages: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        pages.append(await request.json())
        return web.json_response({}, status=202)

    app = web.Application()
    app.router.add_post("/page", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    svc = command_service([{"type": "command", "name": "broken", "argv": ["/bin/false"]}])
    svc["page_webhook"] = {"url": secret_ref("ROLLBACKD_PAGE_URL", f"http://127.0.0.1:{port}/page")}
    try:
        cfg = write_config(tmp_path, services={"rag": svc})
        async with running_daemon(cfg) as d:
            await webhook(d, firing_payload)
            incident, _ = await only_incident(d)
            deadline = time.monotonic() + 10
            while not pages and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    (page,) = pages
    assert page["event"] == "rollbackd.escalation" and page["incident_id"] == incident.id
    assert page["state"] == "failed" and page["steps"][0]["name"] == "broken"
