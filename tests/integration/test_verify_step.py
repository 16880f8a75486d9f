"""The `verify` step inside real incidents (in-process daemon, the reference RAG service as a subprocess),
`POST /v1/verify` and the `rollbackd verify` CLI as a gate."""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import corpus, images, pg
from tests.support.daemon import API_TOKEN, REPO, Api, command_service, running_daemon, write_config

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
QUESTION = "How wide is the Heron telescope mirror and where was it polished?"


@pytest.fixture(scope="module")
def rag_url() -> Iterator[str]:
    dsn = pg.fresh_database_sync("verifystep")
    try:
        asyncio.run(corpus.create_corpus(dsn))
        with images.RagServiceProcess(env={"RAG_PG_DSN": dsn, "RAG_RECORD_CONVERSATIONS": "0"}) as rag:
            yield rag.url
    finally:
        pg.drop_database_sync(dsn)


def verify_config(url: str, **smoke: Any) -> dict[str, Any]:
    return {
        "checks": [
            {
                "type": "smoke",
                "deadline": "3s",
                "interval": "100ms",
                "warmup": 0,
                "consecutive": 2,
                "requests": [
                    {
                        "name": "query",
                        "method": "POST",
                        "url": f"{url}/query",
                        "json": {"question": QUESTION},
                        "expect_json": {"contexts[0].id": "doc-0001"},
                    }
                ],
                **smoke,
            },
            {"type": "governance", "sources_file": str(DATA / "sources.yaml")},
            {"type": "alert_cleared", "deadline": "10s", "interval": "100ms", "stable_for": "1s"},
        ]
    }


def service(tmp_path: Path, url: str, *, alert_cleared: bool = True, **smoke: Any) -> dict[str, Any]:
    svc = command_service(
        [
            {"type": "command", "name": "traffic.cut", "argv": ["touch", str(tmp_path / "cut")]},
            {"type": "verify"},
            {"type": "command", "name": "traffic.restore", "argv": ["touch", str(tmp_path / "restored")]},
        ]
    )
    svc["verify"] = verify_config(url, **smoke)
    if not alert_cleared:  # no Prometheus here: alert_cleared could not prove anything
        svc["verify"]["checks"] = svc["verify"]["checks"][:2]
    svc["escalate_mention"] = "<!subteam^S0ONCALL>"
    return svc


async def call(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return await asyncio.to_thread(api.call, method, path, body)


async def wait_state(api: Api, incident_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    body = await asyncio.to_thread(api.wait_incident, incident_id, states, 30)
    # the store sets a terminal state, then finished_at and error in a second write: wait for both
    for _ in range(100):
        if body["state"] == "running" or body["finished_at"] is not None:
            return body
        await asyncio.sleep(0.02)
        body = (await call(api, "GET", f"/v1/incidents/{incident_id}"))[1]
    return body


async def open_incident(api: Api, payload: dict[str, Any]) -> str:
    status, _ = await asyncio.to_thread(api.webhook, payload)
    assert status == 202
    for _ in range(200):
        _, body = await call(api, "GET", "/v1/incidents?service=rag")
        if body["incidents"]:
            return str(body["incidents"][0]["id"])
        await asyncio.sleep(0.05)
    raise AssertionError("no incident opened")


def fault(url: str, **body: Any) -> None:
    import json
    import urllib.request

    req = urllib.request.Request(
        f"{url}/admin/fault",
        data=json.dumps(body).encode() if body else None,
        method="POST" if body else "DELETE",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).close()


async def test_passing_verification_gives_traffic_back(
    tmp_path: Path, rag_url: str, firing_payload: dict[str, Any], resolved_payload: dict[str, Any]
) -> None:
    fault(rag_url)
    cfg = write_config(tmp_path, services={"rag": service(tmp_path, rag_url, alert_cleared=False)})
    async with running_daemon(cfg) as d:
        api = Api(d.url)
        incident_id = await open_incident(api, firing_payload)
        body = await wait_state(api, incident_id, ("resolved", "verification_failed", "verification_inconclusive"))
        assert body["state"] == "resolved", body
        step = next(s for s in body["steps"] if s["type"] == "verify")
        lines = step["output"]["summary"].splitlines()
        assert [line.split(":")[0] for line in lines] == ["smoke", "governance"]
        assert lines[0].startswith("smoke: PASS 2/2 consecutive rounds ok")
        assert [r["verdict"] for r in step["output"]["results"]] == ["pass", "pass"]
        assert (tmp_path / "restored").exists()
        _, st = await call(api, "GET", "/v1/status")
        assert st["services"]["rag"]["verification"]["verdict"] == "pass"
        assert st["services"]["rag"]["held"] is None
        metrics = (await call(api, "GET", "/metrics"))[1].decode()
        assert 'rollbackd_verifications_total{service="rag",verdict="pass",verifier="smoke"} 1.0' in metrics


async def test_a_resolved_notification_alone_keeps_traffic_cut(
    tmp_path: Path, rag_url: str, firing_payload: dict[str, Any], resolved_payload: dict[str, Any]
) -> None:
    """Alertmanager says resolved, every other check passes, but no Prometheus can confirm the alert's
    current state: a notification is only a hint, the incident ends inconclusive and traffic stays cut."""
    fault(rag_url)
    cfg = write_config(tmp_path, services={"rag": service(tmp_path, rag_url)})
    async with running_daemon(cfg) as d:
        api = Api(d.url)
        incident_id = await open_incident(api, firing_payload)
        await wait_state(api, incident_id, ("running",))
        status, _ = await asyncio.to_thread(api.webhook, resolved_payload)
        assert status == 202
        body = await wait_state(api, incident_id, ("resolved", "verification_failed", "verification_inconclusive"))
        assert body["state"] == "verification_inconclusive", body
        assert (
            "alert_cleared: INCONCLUSIVE cannot tell whether RAGGateFailRateHigh cleared: no Prometheus to ask "
            "(a resolved notification is only a hint)" in body["error"]
        ), body["error"]
        assert not (tmp_path / "restored").exists()


async def test_failed_verification_keeps_traffic_cut_and_holds_the_service(
    tmp_path: Path, rag_url: str, firing_payload: dict[str, Any]
) -> None:
    fault(rag_url, error_fraction=1.0)
    try:
        cfg = write_config(tmp_path, services={"rag": service(tmp_path, rag_url)})
        async with running_daemon(cfg) as d:
            api = Api(d.url)
            incident_id = await open_incident(api, firing_payload)
            body = await wait_state(
                api, incident_id, ("resolved", "verification_failed", "failed", "verification_inconclusive")
            )
            assert body["state"] == "verification_failed", body
            assert body["error"].startswith(
                "verify: verification failed (2 of 3 checks):\nsmoke: FAIL query: HTTP 500 (expected 200)"
            ), body["error"]
            assert (
                "\ngovernance: PASS" in body["error"]
                and "\nalert_cleared: INCONCLUSIVE cannot tell whether RAGGateFailRateHigh cleared: no Prometheus"
                in body["error"]
            )
            assert (tmp_path / "cut").exists() and not (tmp_path / "restored").exists()
            assert [s["name"] for s in body["steps"]] == ["traffic.cut", "verify"]
            sentences = [e["data"].get("sentence", "") for e in body["events"] if e["kind"] == "verification"]
            assert any(s.startswith("smoke: FAIL query: HTTP 500") for s in sentences), sentences
            _, st = await call(api, "GET", "/v1/status")
            rag = st["services"]["rag"]
            assert rag["held"]["kind"] == "hold" and incident_id in rag["held"]["reason"]
            assert rag["verification"]["verdict"] == "fail"
            again = copy.deepcopy(firing_payload)
            again["alerts"][0]["startsAt"] = "2026-11-22T01:00:00.000Z"
            status, _ = await asyncio.to_thread(api.webhook, again)
            assert status == 202
            for _ in range(100):
                _, st = await call(api, "GET", "/v1/status")
                reasons = [x["reason"] for x in st["services"]["rag"]["last_decisions"]]
                if "held" in reasons:
                    break
                await asyncio.sleep(0.05)
            assert reasons[0] == "held", reasons
            _, listed = await call(api, "GET", "/v1/incidents?service=rag")
            assert len(listed["incidents"]) == 1
    finally:
        fault(rag_url)


async def test_unreachable_service_ends_inconclusive(tmp_path: Path, rag_url: str) -> None:
    dead = f"http://127.0.0.1:{images.free_port()}"
    svc = service(tmp_path, dead, deadline="500ms")
    svc["verify"]["checks"] = svc["verify"]["checks"][:1]
    cfg = write_config(tmp_path, services={"rag": svc})
    async with running_daemon(cfg) as d:
        api = Api(d.url)
        status, inc = await call(api, "POST", "/v1/trigger", {"service": "rag", "reason": "test"})
        assert status == 202
        body = await wait_state(
            api, inc["id"], ("resolved", "verification_failed", "verification_inconclusive", "failed")
        )
        assert body["state"] == "verification_inconclusive", body
        assert "smoke: ERROR no answer" in body["error"] and "connection refused" in body["error"]
        assert not (tmp_path / "restored").exists()
        gate = await asyncio.to_thread(cli, d.url, "--only", "smoke")  # the gate contract: 5 ERROR
        assert gate.returncode == 5 and "ERROR" in gate.stdout, (gate.stdout, gate.stderr)


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROLLBACKD_URL": url, "ROLLBACKD_API_TOKEN": API_TOKEN, "PYTHONPATH": str(REPO / "daemon")}
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "verify", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_on_demand_api_and_cli_gate(tmp_path: Path, rag_url: str) -> None:
    fault(rag_url)
    cfg = write_config(tmp_path, services={"rag": service(tmp_path, rag_url)})
    async with running_daemon(cfg) as d:
        api = Api(d.url)
        status, body = await call(api, "POST", "/v1/verify", {"service": "rag", "only": ["smoke", "governance"]})
        assert status == 200 and body["verdict"] == "pass", body
        assert [r["verifier"] for r in body["results"]] == ["smoke", "governance"]
        status, body = await call(api, "POST", "/v1/verify", {"only": ["smoke"], "dry_run": True})
        assert status == 200 and body["would_run"][0].startswith("smoke: query")
        status, body = await call(api, "POST", "/v1/verify", {"service": "rag", "only": ["nope"]})
        assert status == 400 and body["field"] == "only"
        ok = await asyncio.to_thread(cli, d.url, "--only", "smoke,governance")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.splitlines()[0] == "verification of rag: PASS"
        fault(rag_url, error_fraction=1.0)
        try:
            failed = await asyncio.to_thread(cli, d.url, "--service", "rag", "--only", "smoke", "--json")
        finally:
            fault(rag_url)
        assert failed.returncode == 4, failed.stderr
        assert '"verdict": "fail"' in failed.stdout
        manual = await asyncio.to_thread(cli, d.url, "--only", "alert_cleared")  # no incident, no Prometheus
        assert manual.returncode == 6 and "INCONCLUSIVE" in manual.stdout  # the gate contract: 6 INCONCLUSIVE
        _, incidents = await call(api, "GET", "/v1/incidents")
        assert incidents["incidents"] == []  # on demand never opens an incident or changes anything
        assert not (tmp_path / "cut").exists()
