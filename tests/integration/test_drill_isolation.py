"""The drill proves its isolation and ends honestly when interrupted, on the e2e stack (Postgres, the
Qdrant test server, the RAG service on Podman, `rollbackd serve`): v1 green with a snapshot, v2 live.

- a scratch container whose env still reaches the live database or collection is never started: NO-GO;
- the live data changing while a drill runs is a NO-GO with a page;
- SIGTERM cancels a running drill at once, tears down and reports it NO-GO "interrupted";
- after kill -9 (during prepare, during deploy) the next start sweeps every scratch copy and container
  the drill journaled and reports the drill NO-GO "interrupted";
- a start sweeps only its own installation's leftover containers, never another daemon's drill;
- with replicas, a follower's restart leaves the leader's running drill alone; after kill -9 of the
  leader the new leader sweeps it and reports it NO-GO "interrupted".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from rollbackd.drill import scratch
from tests.e2e.config import rollbackd_config
from tests.e2e.stack import Stack, wait_until
from tests.e2e.test_three_am import api, deploy_v2, green_v1_with_snapshot
from tests.integration.test_drill import (
    _databases_like,
    _qdrant,
    assert_scratch_gone,
    assert_untouched,
    cli,
    fingerprint,
    scratch_containers,
)
from tests.support.daemon import API_TOKEN, DaemonProcess, Replicas, free_port, replica_configs
from tests.support.pg import db_name, drop_database_sync, fresh_database_sync
from tests.support.podman import PodmanService

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, podman: PodmanService) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("drilliso") / "stack", podman) as s:
        s.start(rollbackd_config)
        green_v1_with_snapshot(s)
        deploy_v2(s, RAG_MODE="good")
        api(s, "POST", "/v1/pause", {"reason": "drill tests: no automatic rollback"})
        yield s


def other_daemon(stack: Stack, tmp_path: Path, *, drop_env: tuple[str, ...] = (), **drill: Any) -> DaemonProcess:
    """A second daemon on the same stack (its own state), v1 registered green, with drill overrides."""
    config = rollbackd_config(stack)
    config["listen"] = f"127.0.0.1:{free_port()}"
    config["state"] = {"type": "sqlite", "path": str(tmp_path / "state.db")}
    config["prometheus"] = {"url": stack.prometheus.url, "timeout": "3s"}
    section = config["services"]["rag"]["drill"]
    section.update(drill)
    for key in drop_env:
        section["env"].pop(key)
    path = tmp_path / "rollbackd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {
        "DOCKER_HOST": stack.podman.docker_host,
        "CONTAINERS_CONF": str(stack.podman.conf_path),
        "SLACK_BOT_TOKEN": stack.slack.token,
    }
    return DaemonProcess(path, env=env)


def register_green(daemon: DaemonProcess, stack: Stack) -> None:
    for call in (
        ("POST", "/v1/releases", {"version": "v1", "image": "rag:v1", "digest": stack.image_v1}),
        ("POST", "/v1/releases/v1/green", {"reason": "known good"}),
    ):
        status, body = daemon.api.call(*call)
        assert status < 300, body


def scratch_databases(stack: Stack) -> list[str]:
    return asyncio.run(_databases_like(db_name(stack.dsn).replace("_", r"\_") + r"\_\_rb\_%"))


def scratch_collections(stack: Stack) -> list[str]:
    return [c["name"] for c in _qdrant(stack, "/collections")["collections"] if "__rb_" in c["name"]]


def drill_in_background(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rollbackd", "drill", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ROLLBACKD_URL": url, "ROLLBACKD_API_TOKEN": API_TOKEN},
    )


def drills(daemon: DaemonProcess) -> list[dict[str, Any]]:
    status, body = daemon.api.call("GET", "/v1/drills?service=rag")
    assert status == 200, body
    return list(body["drills"])


# ---- isolation before the container starts --------------------------------------------------------
@pytest.mark.parametrize(
    ("dropped", "sentence"),
    [
        ("RAG_PG_DSN", "env RAG_PG_DSN points at the live database {db}"),
        ("RAG_QDRANT_COLLECTION", "env RAG_QDRANT_COLLECTION names the live collection docs"),
    ],
)
def test_a_scratch_container_reaching_live_data_is_never_started(
    stack: Stack, tmp_path: Path, dropped: str, sentence: str
) -> None:
    """drill.env forgets to point the container at a copy: it would inherit the live container's env
    (the live database: 22 rows written into live `conversations` before this check existed)."""
    before = fingerprint(stack)
    with other_daemon(stack, tmp_path, drop_env=(dropped,)) as other:
        register_green(other, stack)
        run = cli(stack, "drill", "--json", url=other.url)
    assert run.returncode == 4, (run.stdout, run.stderr)
    report = json.loads(run.stdout)
    assert report["verdict"] == "NO-GO", report
    assert report["reason"].startswith("deploy: not isolated, the scratch container was not started: ")
    assert sentence.format(db=db_name(stack.dsn)) in report["reason"], report["reason"]
    assert "container" not in report["scratch"]  # never created
    assert "container" not in report["stages"][-1]["detail"]
    assert_scratch_gone(stack, report)
    assert_untouched(stack, before)


def test_checks_the_rewrite_missed_would_verify_the_live_service(stack: Stack, tmp_path: Path) -> None:
    """A `drill.rewrite` that misses the checks' URLs: they would verify the live service and call it
    the rehearsal's GO. NO-GO before they run."""
    before = fingerprint(stack)
    # a rewrite that misses: it maps a base URL no check uses, so the checks' live URLs stay as they are
    with other_daemon(stack, tmp_path, rewrite={"http://no-such-host:1": "http://127.0.0.1:{port}"}) as other:
        register_green(other, stack)
        run = cli(stack, "drill", "--json", url=other.url)
    report = json.loads(run.stdout)
    assert run.returncode == 4 and report["verdict"] == "NO-GO", report
    assert report["reason"].startswith(
        "verify: not isolated, the checks would look at the live service: check "
        "smoke: requests[0].url reaches the live service at "
    ), report["reason"]
    assert report["results"] == []  # no check ran
    assert_scratch_gone(stack, report)
    assert_untouched(stack, before)


# ---- isolation after: live fingerprints -----------------------------------------------------------
async def _touch_live_docs(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO docs (id, title, body, source) VALUES ('drill-x', 't', 'b', 's')")
        await conn.execute("DELETE FROM docs WHERE id = 'drill-x'")
    finally:
        await conn.close()


def test_live_data_changing_during_a_drill_is_no_go_with_a_page(stack: Stack) -> None:
    """Whatever wrote it, a live table written while the drill ran is a NO-GO and pages (the content is
    the same before and after here: an insert and a delete; the counters still tell)."""
    stack.qdrant.inject_fault(r"/snapshots/upload", status=None, delay_s=4.0, times=1)
    drill = drill_in_background(stack.daemon_url)
    try:
        wait_until(lambda: scratch_databases(stack), 60, "prepare (after pick fingerprinted the live data)")
        asyncio.run(_touch_live_docs(stack.dsn))
        out, err = drill.communicate(timeout=180)
    finally:
        if drill.poll() is None:
            drill.kill()
            drill.communicate(timeout=10)  # reaps it and closes its pipes
    assert drill.returncode == 4, (out, err)
    report = json.loads(out)
    assert report["verdict"] == "NO-GO"
    assert report["reason"].startswith("the live data changed during the drill: postgres: table public.docs written"), (
        report["reason"]
    )
    assert report["isolation"]["changes"] and report["torn_down"] is True
    stack.slack.wait_for(
        lambda s: any("the drill touched live data" in json.dumps(m.body) for m in s.messages()), timeout=15
    )


# ---- interrupted drills ---------------------------------------------------------------------------
def test_sigterm_cancels_a_drill_at_once_and_reports_it(stack: Stack, tmp_path: Path) -> None:
    before = fingerprint(stack)
    other = other_daemon(stack, tmp_path, health_url="http://127.0.0.1:{port}/no-such-page", health_timeout="120s")
    other.start()
    try:
        register_green(other, stack)
        drill = drill_in_background(other.url)
        wait_until(lambda: scratch_containers(stack), 120, "the scratch container")
        assert other.proc is not None
        started = time.monotonic()
        other.proc.terminate()
        other.proc.wait(60)
        took = time.monotonic() - started
        out, _ = drill.communicate(timeout=30)
    finally:
        other.stop()
    assert took < 30, f"SIGTERM took {took:.1f}s"  # liveness bound: a systemd stop must not end in kill -9
    report = json.loads(out)
    assert report["verdict"] == "NO-GO" and report["reason"].startswith("interrupted: "), report
    assert report["torn_down"] is True
    assert scratch_containers(stack) == [] and scratch_databases(stack) == [] and scratch_collections(stack) == []
    assert_untouched(stack, before)
    with other:  # the next start finds nothing to sweep: the teardown completed
        listed = drills(other)
    assert [d["reason"].split(":")[0] for d in listed] == ["interrupted"]


@pytest.mark.parametrize("when", ["prepare", "deploy"])
def test_after_kill9_the_next_start_sweeps_and_reports_interrupted(stack: Stack, tmp_path: Path, when: str) -> None:
    before = fingerprint(stack)
    other = other_daemon(stack, tmp_path, health_url="http://127.0.0.1:{port}/no-such-page", health_timeout="120s")
    other.start()
    drill: subprocess.Popen[str] | None = None
    try:
        register_green(other, stack)
        if when == "prepare":
            stack.qdrant.inject_fault(r"/snapshots/upload", status=None, delay_s=3.0, times=1)
        drill = drill_in_background(other.url)
        if when == "prepare":
            wait_until(lambda: scratch_databases(stack), 60, "the scratch database")
        else:
            wait_until(lambda: scratch_containers(stack), 120, "the scratch container")
        other.kill9()
        if when == "prepare":
            time.sleep(4)  # the Qdrant upload already sent finishes on the server after the daemon died
        left = (scratch_containers(stack), scratch_databases(stack), scratch_collections(stack))
        assert left[1], left  # there is something to sweep
        other.start()
        listed = drills(other)
    finally:
        other.stop()
        stack.qdrant.clear_faults()
        if drill is not None:  # the CLI may have ended on its own (the daemon died): its pipes close either way
            if drill.poll() is None:
                drill.kill()
            drill.communicate(timeout=10)  # reaps it and closes its pipes
    assert len(listed) == 1, listed
    report = listed[0]
    assert report["verdict"] == "NO-GO" and report["reason"].startswith("interrupted: "), report
    assert report["torn_down"] is True, report["stages"]
    assert "dropped" in report["stages"][-1]["detail"], report["stages"]
    assert scratch_containers(stack) == [] and scratch_databases(stack) == [] and scratch_collections(stack) == []
    assert_untouched(stack, before)


def _installation(state_db: Path) -> str:
    import sqlite3

    with contextlib.closing(sqlite3.connect(state_db)) as conn:
        (value,) = conn.execute("SELECT value FROM rb_kv WHERE key = 'rollbackd.installation'").fetchone()
    return str(json.loads(value))


def test_a_start_sweeps_its_own_installations_leftovers_never_another_daemons(stack: Stack, tmp_path: Path) -> None:
    """Podman is shared: another daemon (another installation, another state) may be drilling on it right
    now. A start removes the scratch containers its own installation left, and nothing else."""
    other = other_daemon(stack, tmp_path)
    with other:
        pass  # its first start makes its installation id
    mine = _installation(tmp_path / "state.db")
    client = stack.podman.client()

    def leftover(suffix: str, installation: str) -> str:
        name = f"{stack.container_name}__drill_{suffix}"
        labels = {
            **stack.podman.labels,
            scratch.LABEL: suffix,
            scratch.SERVICE_LABEL: "rag",
            scratch.INSTALLATION_LABEL: installation,
        }
        client.containers.create(stack.image_v1, name=name, labels=labels, command=["true"])
        return name

    own = leftover("left_by_me", mine)
    foreign = leftover("drilling_elsewhere", "another-installation")
    try:
        with other:
            wait_until(lambda: own not in scratch_containers(stack), 30, "the own leftover removed")
            assert foreign in scratch_containers(stack)  # another installation's: left alone
    finally:
        client.api.remove_container(foreign, force=True)


# ---- replicas ---------------------------------------------------------------------------------------
@pytest.fixture
def journal_dsn() -> Iterator[str]:
    dsn = fresh_database_sync("drill_ha")
    yield dsn
    drop_database_sync(dsn)


def test_with_replicas_a_follower_never_sweeps_the_leaders_drill_and_a_new_leader_does(
    stack: Stack, tmp_path: Path, journal_dsn: str
) -> None:
    """The running drill's record is in the shared journal: a follower that restarts leaves it alone
    (it is the leader's, running); after kill -9 of the leader, the new leader sweeps what it left and
    reports it NO-GO "interrupted"."""
    before = fingerprint(stack)
    base = rollbackd_config(stack)
    service = base["services"]["rag"]
    service["drill"].update(health_url="http://127.0.0.1:{port}/no-such-page", health_timeout="120s")
    configs = replica_configs(
        tmp_path,
        2,
        services={"rag": service},
        dsn=journal_dsn,
        prometheus={"url": stack.prometheus.url, "timeout": "3s"},
        notify=base["notify"],
        lease="10s",  # a loaded machine must not move the lead by itself while the drill runs
    )
    env = {
        "DOCKER_HOST": stack.podman.docker_host,
        "CONTAINERS_CONF": str(stack.podman.conf_path),
        "SLACK_BOT_TOKEN": stack.slack.token,
    }
    drill: subprocess.Popen[str] | None = None
    with Replicas(configs, env=env) as rs:
        leader = rs.wait_leader()
        (follower,) = rs.followers(leader)
        register_green(leader, stack)
        try:
            drill = drill_in_background(leader.url)
            deadline = time.monotonic() + 120
            while not (running := scratch_containers(stack)):
                assert drill.poll() is None, ("the drill ended before its container started", drill.communicate())
                assert time.monotonic() < deadline, "no scratch container after 120 s"
                time.sleep(0.2)
            follower.stop()
            follower.start()  # a follower's start: the running drill is the leader's, not a leftover
            time.sleep(1)
            assert scratch_containers(stack) == running and drills(follower) == []
            leader.kill9()
            assert rs.wait_leader(exclude=leader, timeout=45) is follower
            wait_until(lambda: drills(follower), 60, "the interrupted drill's report")
            wait_until(lambda: not scratch_containers(stack), 30, "the scratch container swept")
            (report,) = drills(follower)
        finally:
            if drill is not None:
                if drill.poll() is None:
                    drill.kill()
                drill.communicate(timeout=10)
    assert report["verdict"] == "NO-GO" and report["reason"].startswith("interrupted: "), report
    assert report["torn_down"] is True, report["stages"]
    assert (scratch_databases(stack), scratch_collections(stack)) == ([], []), report["stages"]
    assert_untouched(stack, before)


def _alias_target(stack: Stack) -> str:
    aliases = {a["alias_name"]: a["collection_name"] for a in _qdrant(stack, "/aliases")["aliases"]}
    return aliases["docs"]


def test_a_drill_after_a_rollback_to_the_same_set_never_touches_the_live_collection(stack: Stack) -> None:
    """Last (it rolls the live service back). After a rollback the live alias points at the restored
    copy of the set a drill would restore: the drill must not start a container on it, nor drop it.
    (Copy naming that cannot collide is the data-fidelity issue's fix; this proves the drill's own
    guards whatever the names.)"""
    incident = api(stack, "POST", "/v1/trigger", {"reason": "roll back to v1, then drill"})
    assert stack.daemon is not None
    final = stack.daemon.api.wait_incident(
        incident["id"], ("resolved", "failed", "verification_failed", "verification_inconclusive"), timeout=180
    )
    assert any(s["name"] == "data.swap" and s["state"] == "done" for s in final["steps"]), final["steps"]
    live = _alias_target(stack)
    points = _qdrant(stack, f"/collections/{live}")["points_count"]
    api(stack, "POST", "/v1/resume", {"reason": "drill after the rollback"})
    api(stack, "POST", "/v1/pause", {"reason": "drill tests: no automatic rollback"})
    run = cli(stack, "drill", "--json")
    report = json.loads(run.stdout)
    assert _alias_target(stack) == live, ("the live alias moved", report["reason"])
    assert _qdrant(stack, f"/collections/{live}")["points_count"] == points, "the live collection changed"
    if live == f"docs__rb_{report['snapshot_set']}":  # a copy of this set would be named like the live data
        assert report["verdict"] == "NO-GO" and report["reason"].startswith("prepare: not isolated: "), report
        assert f"would reuse the live name {live}" in report["reason"] and "container" not in report["scratch"]
    else:
        assert report["verdict"] == "GO", report["reason"]
