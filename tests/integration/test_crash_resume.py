"""kill -9 of the daemon while a `command` step runs; the restarted daemon resumes the incident from the
journal without re-running the steps that finished (real subprocess daemon, real SQLite journal)."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import DaemonProcess, command_service, write_config
from tests.support.pg import drop_database_sync, fresh_database_sync


def wait_file(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_kill9_mid_step_then_resume_without_rerunning(tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    gate = tmp_path / "gate"
    sleeping = tmp_path / "sleeping"
    plan = [
        {"type": "command", "name": "first", "argv": ["/bin/sh", "-c", f"echo first >> {log}"]},
        # Sleeps until the gate file exists: long enough to kill the daemon inside it, short after restart.
        {
            "type": "command",
            "name": "slow",
            "argv": [
                "/bin/sh",
                "-c",
                f"echo slow-start >> {log}; touch {sleeping}; "
                f"while [ ! -f {gate} ]; do sleep 0.05; done; echo slow-end >> {log}",
            ],
        },
        {"type": "command", "name": "last", "argv": ["/bin/sh", "-c", f"echo last >> {log}"]},
    ]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    payload: dict[str, Any] = json.loads(
        (Path(__file__).parents[1] / "fixtures" / "alertmanager-0.25-firing.json").read_text()
    )
    for a in payload["alerts"]:
        a["labels"].update(alertname="RAGGateFailRateHigh", service="rag")
    daemon = DaemonProcess(cfg)
    try:
        daemon.start()
        status, body = daemon.api.webhook(payload)
        assert status == 202 and body["decisions"][0]["action"] == "rollback"
        wait_file(sleeping)
        daemon.kill9()  # the step's child dies with it (PR_SET_PDEATHSIG): no leftover racing the resume
        assert log.read_text().splitlines() == ["first", "slow-start"]

        gate.touch()
        daemon.start()
        (incident,) = daemon.api.call("GET", "/v1/incidents")[1]["incidents"]
        final = daemon.api.wait_incident(incident["id"], ("resolved", "failed"))
        assert final["state"] == "resolved", final
        lines = log.read_text().splitlines()
        assert lines.count("first") == 1  # finished before the crash: never re-run
        assert lines[-2:] == ["slow-end", "last"]
        first, slow, last = final["steps"]
        # The crash cut the attempt short: not a failed attempt, so the same attempt ran again.
        assert (first["attempts"], slow["attempts"], last["attempts"]) == (1, 1, 1)
        (interrupted,) = [e for e in final["events"] if e["kind"] == "step_interrupted"]
        assert interrupted["data"]["step"] == "slow" and interrupted["data"]["resumes"] == 1
        assert all(s["state"] == "done" for s in final["steps"])
        assert "incident_resumed" in daemon.log.read_text()
        # Alertmanager re-sends after the restart: the journal knows it, so still one incident.
        status, body = daemon.api.webhook(payload)
        assert body["decisions"][0]["reason"] == "duplicate"
        assert len(daemon.api.call("GET", "/v1/incidents")[1]["incidents"]) == 1
    finally:
        daemon.stop()


def test_sigterm_interrupts_and_the_next_start_resumes(tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    gate = tmp_path / "gate"
    plan = [
        {
            "type": "command",
            "name": "wait",
            "argv": [
                "/bin/sh",
                "-c",
                f"echo start >> {log}; while [ ! -f {gate} ]; do sleep 0.05; done; echo end >> {log}",
            ],
        }
    ]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    daemon = DaemonProcess(cfg)
    try:
        daemon.start()
        status, body = daemon.api.call("POST", "/v1/trigger", {"reason": "test: manual", "service": "rag"})
        assert status == 202, body
        wait_file(log)
        daemon.stop()  # SIGTERM: graceful, the step is interrupted and stays journaled as started
        gate.touch()
        daemon.start()
        final = daemon.api.wait_incident(body["id"], ("resolved", "failed"))
        assert final["state"] == "resolved" and final["steps"][0]["attempts"] == 1
    finally:
        daemon.stop()


def firing(service: str = "rag") -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(
        (Path(__file__).parents[1] / "fixtures" / "alertmanager-0.25-firing.json").read_text()
    )
    for a in payload["alerts"]:
        a["labels"].update(alertname="RAGGateFailRateHigh", service=service)
    return payload


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_a_resumed_step_first_kills_what_the_crashed_daemon_left_of_it(tmp_path: Path) -> None:
    # The step's shell dies with the daemon; its grandchild does not (die-with-parent is not inherited).
    # The restarted daemon finds the group journaled for the step and kills it before the step runs again.
    leftover, again = tmp_path / "leftover", tmp_path / "again"
    script = (
        f"if [ -f {again} ]; then echo resumed >> {again}; exit 0; fi; touch {again}; "
        f"sleep 300 & echo $! > {leftover}.tmp; mv {leftover}.tmp {leftover}; wait"
    )
    plan = [{"type": "command", "name": "spawns", "argv": ["/bin/sh", "-c", script]}]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    daemon = DaemonProcess(cfg)
    try:
        daemon.start()
        assert daemon.api.webhook(firing())[0] == 202
        wait_file(leftover)
        sleeper = int(leftover.read_text())
        daemon.kill9()
        time.sleep(0.3)
        assert alive(sleeper)  # what the old code left racing the resumed attempt
        daemon.start()
        (incident,) = daemon.api.call("GET", "/v1/incidents")[1]["incidents"]
        final = daemon.api.wait_incident(incident["id"], ("resolved", "failed"))
        assert final["state"] == "resolved", final
        assert not alive(sleeper)
        (interrupted,) = [e for e in final["events"] if e["kind"] == "step_interrupted"]
        assert sleeper in interrupted["data"]["killed"]
        (process, *_) = [e for e in final["events"] if e["kind"] == "step_process"]
        assert process["data"]["step"] == "spawns" and process["data"]["pgid"] > 0
    finally:
        daemon.stop()


def test_two_crashes_inside_one_step_do_not_use_up_its_retries(tmp_path: Path) -> None:
    log, gate = tmp_path / "steps.log", tmp_path / "gate"
    count = tmp_path / "runs"
    script = (
        f"echo run >> {count}; n=$(wc -l < {count}); echo start-$n >> {log}; "
        f"while [ ! -f {gate}-$n ] && [ ! -f {gate} ]; do sleep 0.02; done; echo end >> {log}"
    )
    plan = [
        {"type": "command", "name": "long", "argv": ["/bin/sh", "-c", script], "retries": 0},
        {"type": "command", "name": "last", "argv": ["/bin/sh", "-c", f"echo last >> {log}"]},
    ]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    daemon = DaemonProcess(cfg)
    try:
        daemon.start()
        assert daemon.api.webhook(firing())[0] == 202
        for n in (1, 2):
            while f"start-{n}" not in (log.read_text() if log.exists() else ""):
                time.sleep(0.02)
            daemon.kill9()
            daemon.start()
        while "start-3" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.02)
        gate.touch()
        (incident,) = daemon.api.call("GET", "/v1/incidents")[1]["incidents"]
        final = daemon.api.wait_incident(incident["id"], ("resolved", "failed"))
        assert final["state"] == "resolved", final
        assert [(s["name"], s["state"], s["attempts"]) for s in final["steps"]] == [
            ("long", "done", 1),
            ("last", "done", 1),
        ]
        resumes = [e["data"]["resumes"] for e in final["events"] if e["kind"] == "step_interrupted"]
        assert resumes == [1, 2]
        assert log.read_text().splitlines() == ["start-1", "start-2", "start-3", "end", "last"]
    finally:
        daemon.stop()


def test_crash_resumes_are_bounded_per_step(tmp_path: Path) -> None:
    started = tmp_path / "started"
    plan = [
        {
            "type": "command",
            "name": "crashy",
            "crash_resumes": 1,
            "argv": ["/bin/sh", "-c", f"echo x >> {started}; sleep 30"],
        }
    ]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    daemon = DaemonProcess(cfg)
    try:
        daemon.start()
        assert daemon.api.webhook(firing())[0] == 202
        for n in (1, 2):
            while len(started.read_text().split() if started.exists() else []) < n:
                time.sleep(0.02)
            daemon.kill9()
            daemon.start()
        (incident,) = daemon.api.call("GET", "/v1/incidents")[1]["incidents"]
        final = daemon.api.wait_incident(incident["id"], ("resolved", "failed"))
        assert final["state"] == "failed"
        assert "interrupted 2 times by a crash or stop of rollbackd (crash_resumes: 1)" in final["error"]
        assert len(started.read_text().split()) == 2
    finally:
        daemon.stop()


# ---- the kill loop ---------------------------------------------------------------------------------
# Every step takes a per-(incident, step) flock for as long as any process of it lives (its grandchild
# `sleep` inherits the lock): a step that starts while a leftover of itself still runs cannot take it and
# says so. A step that starts although its effect is already there (the `.done` file) says so too.
_STEP = """d={root}/$ROLLBACKD_INCIDENT_ID; mkdir -p $d
exec 9>$d/$ROLLBACKD_STEP.lock
flock -n 9 || {{ echo "$ROLLBACKD_INCIDENT_ID $ROLLBACKD_STEP" >> {root}/concurrent; exit 1; }}
[ -f $d/$ROLLBACKD_STEP.done ] && echo "$ROLLBACKD_INCIDENT_ID $ROLLBACKD_STEP" >> {root}/rerun
echo "start $ROLLBACKD_STEP $ROLLBACKD_ATTEMPT" >> $d/log
{extra}
sleep {seconds}
touch $d/$ROLLBACKD_STEP.done; echo "end $ROLLBACKD_STEP" >> $d/log"""
# The first attempt of `flaky` fails (once per incident): retries are exercised under the kills too.
_FLAKY = "[ -f $d/flaky.tried ] || { touch $d/flaky.tried; echo failing >&2; exit 1; }"


def kill_loop_plan(root: Path) -> list[dict[str, Any]]:
    def step(name: str, seconds: float, extra: str = "", **more: Any) -> dict[str, Any]:
        return {
            "type": "command",
            "name": name,
            "timeout": "20s",
            "crash_resumes": 20,
            "argv": ["/bin/sh", "-c", _STEP.format(root=root, extra=extra, seconds=seconds)],
            "check": ["/bin/sh", "-c", f'test -f {root}/"$ROLLBACKD_INCIDENT_ID"/"$ROLLBACKD_STEP".done'],
            **more,
        }

    return [
        step("prepare", 0.2),
        # `left` outlives a restart of the daemon (~0.7 s): a leftover of it would race its resumed attempt
        {"parallel": [step("left", 1.0), step("right", 0.3), step("aside", 0.1)]},
        step("flaky", 0.2, _FLAKY, retries=2, backoff="0.05s"),
        step("cut", 0.1),
        {"parallel": [step("swap", 0.3), step("deploy", 0.2)]},
        step("verify", 0.4),
    ]


def kill_loop_config(tmp_path: Path, state: dict[str, Any]) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    svc = command_service(kill_loop_plan(root))
    return write_config(tmp_path, services={"rag": svc}, state=state, incidents={"kill_grace": "1s"})


def run_kill_loop(daemon: DaemonProcess, kills: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    opened: list[str] = []
    for _ in range(kills):
        daemon.start()
        status, body = daemon.api.call("POST", "/v1/trigger", {"reason": "kill loop", "service": "rag"})
        if status == 202:  # else the incident of the last round still runs (resumed on this start)
            opened.append(body["id"])
        # mostly mid-step, now and then long enough for the 1 s step to finish between two kills
        time.sleep(rng.uniform(0.05, 0.9) if rng.random() < 0.75 else rng.uniform(1.0, 1.6))
        daemon.kill9()
    daemon.start()
    for incident_id in opened:
        daemon.api.wait_incident(incident_id, TERMINAL, timeout=60)
    return opened


TERMINAL = ("resolved", "failed", "aborted", "cancelled", "verification_failed", "verification_inconclusive")


@pytest.mark.timeout(600)  # 32 kills and restarts: about a minute alone, more on a busy machine
@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_kill_loop_every_incident_ends_no_step_twice_or_twice_at_once(tmp_path: Path, store: str) -> None:
    seed = random.randrange(2**32)
    dsn = fresh_database_sync("killloop") if store == "postgres" else None
    state = {"type": "postgres", "dsn": dsn} if dsn else {"type": "sqlite", "path": str(tmp_path / "state.db")}
    daemon = DaemonProcess(kill_loop_config(tmp_path, state))
    root = tmp_path / "runs"
    try:
        opened = run_kill_loop(daemon, 32, seed)
        incidents = {i["id"]: i for i in daemon.api.call("GET", "/v1/incidents?limit=1000")[1]["incidents"]}
    finally:
        daemon.stop()
        if dsn:
            drop_database_sync(dsn)
    assert set(incidents) == set(opened), f"seed {seed}"
    assert all(i["state"] in TERMINAL for i in incidents.values()), (seed, incidents)
    assert not (root / "rerun").exists(), (seed, (root / "rerun").read_text())
    assert not (root / "concurrent").exists(), (seed, (root / "concurrent").read_text())
    states = [i["state"] for i in incidents.values()]
    print(
        f"kill loop {store}: seed {seed}, {len(states)} incidents: {sorted(states)}",
        [i.get("error") for i in incidents.values()],
    )
    assert "resolved" in states, (seed, incidents)
    for incident_id, incident in incidents.items():  # a resolved incident ran every step to its end
        if incident["state"] == "resolved":
            done = sorted(p.name for p in (root / incident_id).glob("*.done"))
            assert done == sorted(
                f"{n}.done" for n in ("prepare", "left", "right", "aside", "flaky", "cut", "swap", "deploy", "verify")
            ), (seed, done)
    leftovers = [pid for pid in _marked_processes() if any(i in _environ(pid) for i in incidents)]
    assert leftovers == [], seed


def _marked_processes() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and b"ROLLBACKD_RUN=" in _environ(int(p), b"")]


def _environ(pid: int, default: Any = "") -> Any:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return default
    return raw if isinstance(default, bytes) else raw.decode(errors="replace")
