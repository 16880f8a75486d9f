"""kill -9 of the daemon while a `command` step runs; the restarted daemon resumes the incident from the
journal without re-running the steps that finished (real subprocess daemon, real SQLite journal)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess, command_service, write_config


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
        {"type": "command", "name": "slow", "argv": [
            "/bin/sh", "-c", f"echo slow-start >> {log}; touch {sleeping}; "
                             f"while [ ! -f {gate} ]; do sleep 0.05; done; echo slow-end >> {log}"]},
        {"type": "command", "name": "last", "argv": ["/bin/sh", "-c", f"echo last >> {log}"]},
    ]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    payload: dict[str, Any] = json.loads((Path(__file__).parents[1] / "fixtures" /
                                          "alertmanager-0.25-firing.json").read_text())
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
    plan = [{"type": "command", "name": "wait", "argv": [
        "/bin/sh", "-c", f"echo start >> {log}; while [ ! -f {gate} ]; do sleep 0.05; done; echo end >> {log}"]}]
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
    payload: dict[str, Any] = json.loads((Path(__file__).parents[1] / "fixtures" /
                                          "alertmanager-0.25-firing.json").read_text())
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
    script = (f"if [ -f {again} ]; then echo resumed >> {again}; exit 0; fi; touch {again}; "
              f"sleep 300 & echo $! > {leftover}.tmp; mv {leftover}.tmp {leftover}; wait")
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
    script = (f"echo run >> {count}; n=$(wc -l < {count}); echo start-$n >> {log}; "
              f"while [ ! -f {gate}-$n ] && [ ! -f {gate} ]; do sleep 0.02; done; echo end >> {log}")
    plan = [{"type": "command", "name": "long", "argv": ["/bin/sh", "-c", script], "retries": 0},
            {"type": "command", "name": "last", "argv": ["/bin/sh", "-c", f"echo last >> {log}"]}]
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
        assert [(s["name"], s["state"], s["attempts"]) for s in final["steps"]] == [("long", "done", 1),
                                                                                  ("last", "done", 1)]
        resumes = [e["data"]["resumes"] for e in final["events"] if e["kind"] == "step_interrupted"]
        assert resumes == [1, 2]
        assert log.read_text().splitlines() == ["start-1", "start-2", "start-3", "end", "last"]
    finally:
        daemon.stop()


def test_crash_resumes_are_bounded_per_step(tmp_path: Path) -> None:
    started = tmp_path / "started"
    plan = [{"type": "command", "name": "crashy", "crash_resumes": 1,
             "argv": ["/bin/sh", "-c", f"echo x >> {started}; sleep 30"]}]
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
