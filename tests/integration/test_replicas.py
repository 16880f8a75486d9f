"""Replicas on one Postgres journal (rollbackd.ha), as real `rollbackd serve` processes: one leads and
runs incidents, the others take webhooks and API calls; a follower takes over a dead leader's rollback
at its journal point; a stale leader's writes are fenced."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import (
    API_TOKEN,
    DaemonProcess,
    Replicas,
    command_service,
    load_settings,
    replica_configs,
    write_config,
)
from tests.support.failover import (
    STEPS,
    TERMINAL,
    failover_plan,
    incident_thread,
    journaled_fingerprints,
    percentile,
    run_cycles,
)
from tests.support.pg import drop_database_sync, fresh_database_sync
from tests.support.slack_recorder import SlackRecorder
from tests.support.tcp_proxy import ThreadedProxy


@pytest.fixture
def dsn() -> object:
    name = fresh_database_sync("replicas")
    yield name
    drop_database_sync(name)


def _done(root: Path, incident_id: str) -> list[str]:
    return sorted(p.stem for p in (root / incident_id).glob("*.done"))


def test_one_leader_runs_what_a_follower_journaled(tmp_path: Path, dsn: str) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    with Replicas(replica_configs(tmp_path, 3, services={"rag": command_service(failover_plan(root))}, dsn=dsn)) as rs:
        leader = rs.wait_leader()
        followers = rs.followers(leader)
        assert [f.readyz() for f in followers] == [
            {"ready": True, "leader": False, "replica": f.readyz()["replica"]} for f in followers
        ]
        status, _ = followers[0].api.webhook(_alert(1))  # only a follower hears it
        assert status == 202
        first = _only_incident(followers[1])
        assert followers[1].api.wait_incident(first, ("resolved",), timeout=30)["state"] == "resolved"
        # a manual trigger on a follower: journaled there, run by the leader
        status, body = followers[1].api.call("POST", "/v1/trigger", {"reason": "by hand", "service": "rag"})
        assert status == 202, body
        assert leader.api.wait_incident(body["id"], ("resolved",), timeout=30)["state"] == "resolved"
        for incident_id in (first, body["id"]):
            assert _done(root, incident_id) == sorted(STEPS)
        ran_by = {line.split()[0] for line in (root / "pids").read_text().split("\n") if line}
        assert ran_by == {str(leader.pid)}  # no follower ran any step
        status, state = followers[0].api.call("GET", "/v1/status")
        ha = state["ha"]
        assert ha["leader"] == leader.readyz()["replica"] and ha["this_replica_leads"] is False
        assert sorted(r["id"] for r in ha["replicas"]) == sorted(r.readyz()["replica"] for r in rs.all)
        assert [r["leads"] for r in ha["replicas"]].count(True) == 1
        assert all(r["last_heartbeat_s_ago"] < 5 for r in ha["replicas"])
        assert "rollbackd_leader 1.0" in _metrics(leader) and "rollbackd_leader 0.0" in _metrics(followers[0])
        status, refused = followers[0].api.call("POST", "/v1/drill", {"service": "rag", "reason": "try"})
        assert (status, refused["reason"]) == (409, "not_leader"), refused  # drills are the leader's
        shown = _cli_status(followers[1])  # `rollbackd status` asked of any replica shows them all
        assert shown.splitlines()[1].startswith(f"leader:       {ha['leader']} since ")
        marked = [line for line in shown.splitlines() if line.endswith("LEADER")]
        assert len(marked) == 1 and ha["leader"] in marked[0]
        assert sum(1 for line in shown.splitlines() if "heartbeat" in line) == 3
    assert not (root / "rerun").exists() and not (root / "concurrent").exists()


def test_sqlite_refuses_replicas(tmp_path: Path) -> None:
    from rollbackd.errors import ConfigError

    cfg = write_config(
        tmp_path, services={"rag": command_service([{"type": "command", "argv": ["true"]}])}, ha={"replicas": 2}
    )
    with pytest.raises(ConfigError, match=r"ha\.replicas: 2 replicas need the postgres state store"):
        load_settings(cfg)


def _alert(n: int) -> dict[str, object]:
    from tests.support.failover import alert

    return alert(10_000 + n)


def _only_incident(replica: object) -> str:
    status, body = replica.api.call("GET", "/v1/incidents?limit=10")  # type: ignore[attr-defined]
    assert status == 200 and len(body["incidents"]) >= 1, body
    return str(body["incidents"][0]["id"])


def _replica_pids(replica: DaemonProcess) -> dict[str, int]:
    _, state = replica.api.call("GET", "/v1/status")
    return {r["id"]: r["pid"] for r in state["ha"]["replicas"]}


def _cli_status(replica: DaemonProcess) -> str:
    env = {**replica.env, "ROLLBACKD_URL": replica.url, "ROLLBACKD_API_TOKEN": API_TOKEN}
    done = subprocess.run(
        [sys.executable, "-m", "rollbackd", "status"], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def _metrics(replica: object) -> str:
    _, body = replica.api.call("GET", "/metrics")  # type: ignore[attr-defined]
    return body.decode() if isinstance(body, bytes) else str(body)


@pytest.mark.timeout(600)  # 30 takeovers of a 2 s lease: about two minutes alone, more on a busy machine
def test_kill9_of_the_leader_mid_rollback_30_cycles(tmp_path: Path, dsn: str) -> None:
    """3 replicas; 30 times: an alert to every replica, SIGKILL of the leader at a random point of the
    rollback, a follower takes over and finishes it, the dead one comes back as a follower."""
    seed = random.randrange(2**32)
    root = tmp_path / "runs"
    root.mkdir()
    svc = command_service(failover_plan(root), cooldown="0s", budget={"max": 1000, "window": "1h"})
    with Replicas(replica_configs(tmp_path, 3, services={"rag": svc}, dsn=dsn, incidents={"kill_grace": "0.5s"})) as rs:
        cycles = run_cycles(rs, 30, seed)
        _, body = rs.wait_leader().api.call("GET", "/v1/incidents?limit=1000")
        running = {str(r.readyz()["replica"]): r.pid for r in rs.all}  # type: ignore[index]
        deadline = time.monotonic() + 5
        while _replica_pids(rs.all[0]) != running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _replica_pids(rs.all[0]) == running  # status shows each restarted replica's new process
    incidents = {i["id"]: i for i in body["incidents"]}
    opened = [c.incident_id for c in cycles if c.incident_id]
    assert len(opened) == 30 and set(incidents) == set(opened), (seed, cycles)  # 0 incidents lost
    assert {i["state"] for i in incidents.values()} == {"resolved"}, (seed, incidents)
    for incident_id in opened:  # every step ran to its end once: not twice, not twice at once
        assert _done(root, incident_id) == sorted(STEPS), (seed, incident_id)
    assert not (root / "rerun").exists(), (seed, (root / "rerun").read_text())
    assert not (root / "concurrent").exists(), (seed, (root / "concurrent").read_text())
    accepted = {fp for c in cycles for fp in c.accepted}
    assert len(accepted) == 60 and accepted <= journaled_fingerprints(dsn), seed  # 0 alerts 202 and lost
    takeovers = [c.takeover_s for c in cycles if c.takeover_s is not None]
    print(
        f"takeover over {len(takeovers)} kills: p50 {percentile(takeovers, 0.5):.2f}s "
        f"p99 {percentile(takeovers, 0.99):.2f}s (lease 2s), seed {seed}"
    )


def _long_plan(root: Path, seconds: float) -> list[dict[str, object]]:
    plan = failover_plan(root)
    long = dict(plan[0], name="long")
    long["argv"] = [str(a).replace("sleep 0.2", f"sleep {seconds}") for a in long["argv"]]  # type: ignore[union-attr]
    return [long, *plan[1:]]


def _wait_line(path: Path, needle: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and needle in path.read_text()):
        assert time.monotonic() < deadline, f"{needle!r} never in {path}"
        time.sleep(0.02)


def _events_after(replica: DaemonProcess, since: float, names: tuple[str, ...]) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in replica.log.read_text().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("ts", 0) > since and e.get("event") in names]


def test_a_leader_stopped_past_its_lease_never_writes_a_step_again(
    tmp_path: Path, dsn: str, slack_recorder: SlackRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP of the leader mid-step for longer than the lease: a follower takes over (killing the
    stopped leader's step process group), says so in the incident's Slack thread, and finishes; after
    SIGCONT the old leader starts, finishes and journals nothing: it steps down and says so."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack_recorder.token)
    svc = command_service(_long_plan(root, 3.0))
    slack = {
        "type": "slack",
        "bot_token": "${SLACK_BOT_TOKEN}",
        "channel": "C0INCIDENT",
        "base_url": slack_recorder.base_url,
        "max_retries": 1,
        "timeout": 2,
    }
    with Replicas(replica_configs(tmp_path, 2, services={"rag": svc}, dsn=dsn, notify=slack)) as rs:
        old = rs.wait_leader()
        old_id = str(old.readyz()["replica"])  # type: ignore[index]
        status, body = old.api.call("POST", "/v1/trigger", {"reason": "sigstop", "service": "rag"})
        assert status == 202, body
        _wait_line(root / "pids", f"{old.pid} {body['id']} long")
        # the thread's root is posted and its ts journaled before the stop: a leader stopped between the
        # two leaves the next one no thread to reply in (its messages then start a thread of their own)
        deadline = time.monotonic() + 10
        while incident_thread(dsn, body["id"]) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        old.pause()
        new = rs.wait_leader(exclude=old)
        _wait_line(root / "pids", f"{new.pid} {body['id']} long")  # resumed there, mid-step
        time.sleep(0.5)
        woke = time.time()
        old.cont()  # while the new leader runs the same step
        final = new.api.wait_incident(body["id"], TERMINAL, timeout=30)
        deadline = time.monotonic() + 10
        while old.leads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old.readyz() == {"ready": True, "leader": False, "replica": old.readyz()["replica"]}  # type: ignore[index]
        slack_recorder.wait_for(
            lambda r: len(r.roots()) == 1 and any("takeover" in (m.text or "") for m in r.thread(r.roots()[0].ts))
        )
    assert final["state"] == "resolved", final
    (root_post,) = slack_recorder.roots()
    (note,) = [m.text or "" for m in slack_recorder.thread(root_post.ts) if "takeover" in (m.text or "")]
    assert f"replica {old_id} stopped leading" in note
    assert _done(root, body["id"]) == sorted(["long", "swap", "deploy", "verify"])
    assert not (root / "rerun").exists() and not (root / "concurrent").exists()
    started_by_old = [
        line
        for line in (root / "pids").read_text().splitlines()
        if line.startswith(f"{old.pid} ") and float(line.split()[3]) > woke
    ]
    assert started_by_old == []
    assert _events_after(old, woke, ("step_started", "step_finished", "incident_finished", "incident_started")) == []
    said = _events_after(old, woke, ("leader_stepped_down", "incident_fenced"))
    assert said and said[0]["event"] in ("leader_stepped_down", "incident_fenced"), said


@pytest.mark.parametrize("fault", ["blackhole", "cut"])
def test_a_leader_cut_from_postgres_steps_down_and_rejoins_as_a_follower(tmp_path: Path, dsn: str, fault: str) -> None:
    """The leader's link to Postgres is cut (or silently dropped) mid-step: it steps down on its own
    (its lease can no longer be renewed), the other replica takes over and finishes the rollback; when
    the link heals the old leader is a follower and never ran a step again."""
    root = tmp_path / "runs"
    root.mkdir()
    services = {"rag": command_service(_long_plan(root, 3.0))}
    with ThreadedProxy("127.0.0.1", 5432) as proxy:
        proxied = dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        configs = [
            *replica_configs(tmp_path / "cut", 1, services=services, dsn=proxied, ha={"replicas": 2}),
            *replica_configs(tmp_path / "direct", 1, services=services, dsn=dsn, ha={"replicas": 2}),
        ]
        with Replicas(configs) as rs:
            old, other = rs.all
            assert rs.wait_leader() is old  # it started first
            status, body = old.api.call("POST", "/v1/trigger", {"reason": fault, "service": "rag"})
            assert status == 202, body
            _wait_line(root / "pids", f"{old.pid} {body['id']} long")
            cut = time.time()
            getattr(proxy, fault)()
            assert rs.wait_leader(exclude=old) is other
            # the takeover resumes the step once the old leader's process of it has ended; a loaded
            # machine (three test workers on two cores) once took longer than 20 s
            _wait_line(root / "pids", f"{other.pid} {body['id']} long", timeout=60)
            proxy.restore()
            final = other.api.wait_incident(body["id"], TERMINAL, timeout=30)
            deadline = time.monotonic() + 15
            while (ready := old.readyz() or {}).get("ready") is not True and time.monotonic() < deadline:
                time.sleep(0.1)
            # its incident was cancelled mid-wait when it stepped down: no wait of it may keep it unready
            assert ready == {"ready": True, "leader": False, "replica": ready.get("replica")}, ready
            assert rs.leaders() == [other]
    assert final["state"] == "resolved", final
    assert _done(root, body["id"]) == sorted(["long", "swap", "deploy", "verify"])
    assert not (root / "rerun").exists() and not (root / "concurrent").exists()
    assert [
        line
        for line in (root / "pids").read_text().splitlines()
        if line.startswith(f"{old.pid} ") and float(line.split()[3]) > cut
    ] == []
    assert _events_after(old, cut, ("step_started", "step_finished", "incident_finished")) == []
    down = _events_after(old, cut, ("leader_stepped_down",))
    assert down and ("renew" in str(down[0]["why"]) or "expired" in str(down[0]["why"])), down


def test_abort_asked_of_a_follower_stops_the_leaders_running_step(tmp_path: Path, dsn: str) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    with Replicas(
        replica_configs(tmp_path, 2, services={"rag": command_service(_long_plan(root, 20.0))}, dsn=dsn)
    ) as rs:
        leader = rs.wait_leader()
        (follower,) = rs.followers(leader)
        status, body = follower.api.call("POST", "/v1/trigger", {"reason": "abort me", "service": "rag"})
        assert status == 202, body
        _wait_line(root / "pids", f"{leader.pid} {body['id']} long")
        asked = time.monotonic()
        status, answer = follower.api.call("POST", f"/v1/incidents/{body['id']}/abort")
        assert status in (200, 202), answer
        final = follower.api.wait_incident(body["id"], ("aborted",), timeout=15)
        assert time.monotonic() - asked < 15  # not the step's 20 s: the leader stopped it
    assert [s["state"] for s in final["steps"]] == ["failed"] and final["steps"][0]["error"] == "stopped by abort"
    assert _done(root, body["id"]) == []
