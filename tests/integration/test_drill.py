"""`rollbackd drill` for real, on the e2e stack (Postgres, the Qdrant test server, the RAG service on
Podman, `rollbackd serve`): v1 green with a snapshot, v2 live — the 3 AM situation, so the drill
rehearses exactly the rollback that would run (v1's image on v1's data) while v2 keeps serving. v2
runs in good mode and automatic actions are paused, so no alert rolls it back under the fingerprints
(a real rollback would change them; only the last test starts one, by hand).

The live things are fingerprinted before and after: every table's content (the live service's own
`conversations` writes excepted: only the rows that existed before are compared), the database's oid
(a rename swap would change it), the collection's points and the alias target, the container's id,
image and start time, and the traffic switch's history.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from tests.e2e.config import rollbackd_config
from tests.e2e.stack import Stack, wait_until
from tests.e2e.test_three_am import api, deploy_v2, green_v1_with_snapshot
from tests.support.daemon import API_TOKEN, DaemonProcess, free_port
from tests.support.pg import admin_connect, database_exists, db_name
from tests.support.podman import PodmanService

pytestmark = [pytest.mark.timeout(300)]
TABLES = ("docs", "chunks", "schema_version")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, podman: PodmanService) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("drill") / "stack", podman) as s:
        s.start(rollbackd_config)
        green_v1_with_snapshot(s)
        deploy_v2(s, RAG_MODE="good")  # v2 serves well: no alert may roll it back while we fingerprint
        api(s, "POST", "/v1/pause", {"reason": "drill tests: no automatic rollback"})
        yield s


# ---- fingerprints of the live things --------------------------------------------------------------
async def _pg_fingerprint(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        out: dict[str, Any] = {}
        for table in TABLES:
            out[table] = await conn.fetchval(
                f"SELECT md5(coalesce(string_agg(md5(t::text), '' ORDER BY t::text), '')) FROM {table} t"
            )
        out["oid"] = await conn.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
        out["conversations_max"] = await conn.fetchval("SELECT coalesce(max(id), 0) FROM conversations")
        return out
    finally:
        await conn.close()


async def _conversations_upto(dsn: str, upto: int) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(
            await conn.fetchval(
                "SELECT md5(coalesce(string_agg(md5(t::text), '' ORDER BY id), '')) "
                "FROM conversations t WHERE id <= $1",
                upto,
            )
        )
    finally:
        await conn.close()


async def _databases_like(pattern: str) -> list[str]:
    conn = await admin_connect()
    try:
        return sorted(
            r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", pattern)
        )
    finally:
        await conn.close()


def _qdrant(stack: Stack, path: str) -> Any:
    with urllib.request.urlopen(stack.qdrant.url + path, timeout=10) as resp:
        return json.loads(resp.read())["result"]


def live_fingerprint(stack: Stack) -> dict[str, Any]:
    container = stack.podman.client().api.inspect_container(stack.container_name)
    collection = _qdrant(stack, "/collections/docs__v1")
    return {
        "pg": asyncio.run(_pg_fingerprint(stack.dsn)),
        "qdrant": {
            "points": collection["points_count"],
            "status": collection["status"],
            "aliases": _qdrant(stack, "/aliases")["aliases"],
            "collections": sorted(c["name"] for c in _qdrant(stack, "/collections")["collections"]),
        },
        "container": {
            "id": container["Id"],
            "image": container["Image"],
            "started": container["State"]["StartedAt"],
            "running": container["State"]["Running"],
        },
        "traffic": list(stack.traffic.history),
    }


def assert_untouched(stack: Stack, before: dict[str, Any]) -> None:
    after = live_fingerprint(stack)
    assert after["pg"]["oid"] == before["pg"]["oid"]
    assert {t: after["pg"][t] for t in TABLES} == {t: before["pg"][t] for t in TABLES}
    upto = before["pg"]["conversations_max"]
    assert asyncio.run(_conversations_upto(stack.dsn, upto)) == before["conversations_upto"]
    assert after["qdrant"] == before["qdrant"]
    assert after["container"] == before["container"]
    assert after["traffic"] == [] == before["traffic"]


def fingerprint(stack: Stack) -> dict[str, Any]:
    before = live_fingerprint(stack)
    before["conversations_upto"] = asyncio.run(_conversations_upto(stack.dsn, before["pg"]["conversations_max"]))
    return before


def scratch_containers(stack: Stack) -> list[str]:
    """This stack's scratch containers (Podman's storage is shared with the other test workers' stacks)."""
    return [n for n in stack.podman.container_names() if n.startswith(f"{stack.container_name}__drill_")]


def assert_scratch_gone(stack: Stack, report: dict[str, Any]) -> None:
    assert report["torn_down"] is True
    teardown = report["stages"][-1]
    assert teardown["name"] == "teardown" and teardown["ok"], teardown
    assert scratch_containers(stack) == []
    assert asyncio.run(_databases_like(db_name(stack.dsn).replace("_", r"\_") + r"\_\_%")) == []
    collections = [c["name"] for c in _qdrant(stack, "/collections")["collections"]]
    assert collections == ["docs__v1"], collections
    for copy in (report.get("scratch") or {}).get("data", {}).values():
        assert not asyncio.run(database_exists(copy))


def cli(stack: Stack, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROLLBACKD_URL": url or stack.daemon_url, "ROLLBACKD_API_TOKEN": API_TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", *args], env=env, capture_output=True, text=True, timeout=240, check=False
    )


# ---- the tests ----------------------------------------------------------------------------------
def test_go_drill_restores_scratch_copies_and_leaves_the_live_service_alone(stack: Stack) -> None:
    before = fingerprint(stack)
    run = cli(stack, "drill", "--json", "--reason", "weekly rehearsal")
    assert run.returncode == 0, (run.stdout, run.stderr)
    report = json.loads(run.stdout)
    assert report["verdict"] == "GO", json.dumps(report, indent=1)[:3000]
    assert [s["name"] for s in report["stages"]] == ["pick", "prepare", "deploy", "verify", "teardown"]
    assert all(s["ok"] and isinstance(s["seconds"], float) for s in report["stages"])
    assert all(s["seconds"] > 0 for s in report["stages"] if s["name"] in ("prepare", "deploy", "verify"))
    assert report["time_to_restore_s"] > 0
    assert report["release"]["version"] == "v1" and report["release"]["live"] == "v2"
    assert {r["verifier"]: r["verdict"] for r in report["results"]} == {
        "smoke": "pass",
        "ragas_quick": "pass",
        "governance": "pass",
    }
    assert any("counts" in n and "manifest" in n for n in report["notes"])
    scratch = report["scratch"]["container"]
    assert scratch["container"] == f"{stack.container_name}__drill_{report['id']}"
    assert scratch["image_id"].removeprefix("sha256:") == stack.image_v1.removeprefix("sha256:")
    assert scratch["live_container"] == before["container"]["id"] and scratch["port"] != stack.rag_port
    copies = sorted(report["scratch"]["data"].values())  # fresh names: <base>__rb_<set>_<4 hex>
    assert [c.rpartition("_")[0] for c in copies] == sorted(
        [f"{db_name(stack.dsn)}__rb_{report['snapshot_set']}", f"docs__rb_{report['snapshot_set']}"]
    )
    rewrite = report["scratch"]["rewrite"]  # the checks looked at the scratch container and database
    assert rewrite[stack.rag_url] == f"http://127.0.0.1:{scratch['port']}"
    assert rewrite[stack.dsn].rpartition("_")[0].endswith(f"__rb_{report['snapshot_set']}")
    assert_scratch_gone(stack, report)
    assert_untouched(stack, before)
    assert stack.rag_version() == "v2" and stack.running_image() == stack.image_v2

    # kept: `status` (JSON and text) shows it, the history lists it, the metric says when
    svc = api(stack, "GET", "/v1/status")["services"]["rag"]
    assert svc["drill"]["last"]["id"] == report["id"] and svc["drill"]["running"] is None
    text = cli(stack, "status")
    assert text.returncode == 0 and "drill:        GO" in text.stdout and report["id"] in text.stdout, text.stdout
    assert api(stack, "GET", "/v1/drills?service=rag")["drills"][0]["id"] == report["id"]
    with urllib.request.urlopen(f"{stack.daemon_url}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    line = next(x for x in metrics.splitlines() if x.startswith("rollbackd_drill_last_success_timestamp_seconds{"))
    assert float(line.split()[-1]) > 0

    # the text report
    run = cli(stack, "drill")
    assert run.returncode == 0, (run.stdout, run.stderr)
    print(run.stdout)
    assert run.stdout.startswith("drill ") and ": GO" in run.stdout.splitlines()[0]
    for stage in ("pick", "prepare", "deploy", "verify", "teardown"):
        assert f"    {stage}" in run.stdout
    assert "time to restore:" in run.stdout
    assert_untouched(stack, before)


def test_no_go_when_prepare_fails_and_nothing_is_left(stack: Stack) -> None:
    before = fingerprint(stack)
    stack.qdrant.inject_fault(r"/snapshots/upload", status=500, message="disk full (injected)", times=None)
    try:
        run = cli(stack, "drill", "--json")
    finally:
        stack.qdrant.clear_faults()
    assert run.returncode == 4, (run.stdout, run.stderr)
    report = json.loads(run.stdout)
    assert report["verdict"] == "NO-GO" and report["reason"].startswith("prepare: ")
    assert [(s["name"], s["ok"]) for s in report["stages"]] == [("pick", True), ("prepare", False), ("teardown", True)]
    assert report["time_to_restore_s"] is None
    assert_scratch_gone(stack, report)
    assert_untouched(stack, before)
    assert api(stack, "GET", "/v1/status")["services"]["rag"]["drill"]["last"]["verdict"] == "NO-GO"


def test_no_go_when_the_scratch_container_is_unhealthy(stack: Stack, tmp_path: Path) -> None:
    """A second daemon on the same stack whose drill health URL 404s: the container and the copies go."""
    config = rollbackd_config(stack)
    config["listen"] = f"127.0.0.1:{free_port()}"
    config["state"] = {"type": "sqlite", "path": str(tmp_path / "state.db")}
    config["prometheus"] = {"url": stack.prometheus.url, "timeout": "3s"}
    # long enough for the scratch container to listen on a loaded machine (3 s and 10 s each once ended on a
    # refused connection in CI, not the 404; here it listens after 0.5 s): the drill polls until the deadline
    # and reports the last answer and the container's condition
    config["services"]["rag"]["drill"].update(health_url="http://127.0.0.1:{port}/no-such-page", health_timeout="30s")
    path = tmp_path / "rollbackd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {
        "DOCKER_HOST": stack.podman.docker_host,
        "CONTAINERS_CONF": str(stack.podman.conf_path),
        "SLACK_BOT_TOKEN": stack.slack.token,
    }
    before = fingerprint(stack)
    with DaemonProcess(path, env=env) as other:
        url = f"http://{config['listen']}"
        for call in (
            ("POST", "/v1/releases", {"version": "v1", "image": "rag:v1", "digest": stack.image_v1}),
            ("POST", "/v1/releases/v1/green", {"reason": "known good"}),
        ):
            status, body = other.api.call(*call)
            assert status < 300, body
        run = cli(stack, "drill", "--json", url=url)
    assert run.returncode == 4, (run.stdout, run.stderr)
    report = json.loads(run.stdout)
    assert report["verdict"] == "NO-GO" and report["reason"].startswith("deploy: ")
    assert "no-such-page" in report["reason"] and "HTTP 404" in report["reason"], report["reason"]
    assert "(container running; last log lines: " in report["reason"] and "listening on" in report["reason"]
    assert [(s["name"], s["ok"]) for s in report["stages"]] == [
        ("pick", True),
        ("prepare", True),
        ("deploy", False),
        ("teardown", True),
    ]
    assert "removed" in report["stages"][-1]["detail"] and "dropped" in report["stages"][-1]["detail"]
    assert_scratch_gone(stack, report)
    assert_untouched(stack, before)


def test_an_incident_preempts_a_running_drill_and_refuses_new_ones(stack: Stack) -> None:
    """Last: the rollback it starts changes the live service."""
    stack.qdrant.inject_fault(r"/snapshots/upload", status=None, delay_s=4.0, times=1)  # the drill's prepare waits
    drill = subprocess.Popen(
        [sys.executable, "-m", "rollbackd", "drill", "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "ROLLBACKD_URL": stack.daemon_url, "ROLLBACKD_API_TOKEN": API_TOKEN},
    )
    try:
        wait_until(lambda: api(stack, "GET", "/v1/status")["services"]["rag"]["drill"]["running"], 60, "a drill")
        assert stack.daemon is not None
        status, body = stack.daemon.api.call("POST", "/v1/drill", {"reason": "a second one"})
        assert status == 409 and body["reason"] == "drill_running", body
        incident = api(stack, "POST", "/v1/trigger", {"reason": "v2 is bad"})
        out, _ = drill.communicate(timeout=120)
    finally:
        if drill.poll() is None:
            drill.kill()
    assert drill.returncode == 4, out
    report = json.loads(out)
    assert report["verdict"] == "NO-GO" and f"pre-empted by incident {incident['id']}" in report["reason"]
    assert report["torn_down"] is True
    status, body = stack.daemon.api.call("POST", "/v1/drill", {"reason": "during the incident"})
    final = stack.daemon.api.wait_incident(
        incident["id"], ("resolved", "failed", "verification_failed", "verification_inconclusive"), timeout=180
    )
    assert status == 409 and body["reason"] == "incident_active" and incident["id"] in body["detail"], body
    steps = [(s["name"], s["state"], s["error"]) for s in final["steps"]]
    assert final["state"] in ("resolved", "verification_inconclusive"), json.dumps(steps)  # manual: no alert
    assert scratch_containers(stack) == []
