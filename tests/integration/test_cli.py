"""The `rollbackd` command against a real daemon subprocess: output, exit codes, laziness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import API_TOKEN, REPO, DaemonProcess, command_service, write_config


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    tmp = tmp_path_factory.mktemp("cli")
    plan = [{"type": "command", "name": "announce", "argv": ["/bin/echo", "rolling back"]}]
    cfg = write_config(tmp, services={"rag": command_service(plan), "search": command_service(plan)})
    with DaemonProcess(cfg) as d:
        yield d


def cli(*args: str, url: str | None = None, token: str | None = API_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "daemon")}
    if url:
        env["ROLLBACKD_URL"] = url
    if token:
        env["ROLLBACKD_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_status_table_and_json(daemon: DaemonProcess) -> None:
    out = cli("status", url=daemon.url)
    assert out.returncode == 0, out.stderr
    assert "mode: auto" in out.stdout and "service rag" in out.stdout and "budget:       2/2" in out.stdout
    body = json.loads(cli("status", "--json", url=daemon.url).stdout)
    assert set(body["services"]) == {"rag", "search"}


def test_trigger_needs_service_when_several(daemon: DaemonProcess) -> None:
    out = cli("trigger", "--reason", "test", "--yes", url=daemon.url)
    assert out.returncode == 2 and "[service]" in out.stderr and "more than one service" in out.stderr


def test_trigger_refuses_without_terminal_unless_yes(daemon: DaemonProcess) -> None:
    out = cli("trigger", "--service", "rag", "--reason", "test", url=daemon.url)
    assert out.returncode == 1 and "--yes" in out.stderr


def test_trigger_show_history(daemon: DaemonProcess) -> None:
    out = cli("trigger", "--service", "search", "--reason", "bad deploy at 18:00", "--yes", url=daemon.url)
    assert out.returncode == 0, out.stderr
    incident_id = out.stdout.split()[1]
    final = daemon.api.wait_incident(incident_id, ("resolved",))
    assert final["trigger"]["requested_by"] == "tester"  # the API token's name is journaled as who
    shown = cli("show", incident_id, url=daemon.url)
    assert shown.returncode == 0 and "RESOLVED" in shown.stdout and "announce" in shown.stdout
    history = cli("history", "--service", "search", url=daemon.url)
    assert incident_id in history.stdout


def test_pause_resume(daemon: DaemonProcess) -> None:
    out = cli("pause", "--service", "rag", "--for", "2h", "--reason", "deploy freeze", url=daemon.url)
    assert out.returncode == 0 and "paused rag" in out.stdout
    status = json.loads(cli("status", "--json", url=daemon.url).stdout)
    assert status["services"]["rag"]["paused"]["reason"] == "deploy freeze"
    assert cli("resume", "--service", "rag", url=daemon.url).returncode == 0
    status = json.loads(cli("status", "--json", url=daemon.url).stdout)
    assert status["services"]["rag"]["paused"] is None
    bad = cli("pause", "--service", "rag", "--for", "soon", "--reason", "x", url=daemon.url)
    assert bad.returncode == 2 and "for" in bad.stderr


def test_abort_unknown_and_show_unknown(daemon: DaemonProcess) -> None:
    assert cli("show", "nope", url=daemon.url).returncode == 1
    assert cli("abort", "nope", url=daemon.url).returncode == 1


def test_exit_codes_unreachable_usage_auth(daemon: DaemonProcess) -> None:
    assert cli("status", url="http://127.0.0.1:9").returncode == 3
    assert cli("frobnicate").returncode == 2
    assert cli("status", url=daemon.url, token="wrong-token-123456").returncode == 1


def test_help_and_status_import_nothing_heavy() -> None:
    code = (
        "import sys; from rollbackd.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "main(['status', '--url', 'http://127.0.0.1:9'])\n"
        "heavy = [m for m in ('aiohttp', 'asyncpg', 'docker', 'slack_sdk', 'qdrant_client', 'pydantic',"
        " 'prometheus_client', 'yaml', 'apscheduler') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "daemon")},
    )
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_serve_reports_config_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("services: {}\n")
    out = cli("serve", "--config", str(cfg))
    assert out.returncode == 1 and "auth: Field required" in out.stderr


def test_pause_prints_until_and_resume_all_lifts_every_service(daemon: DaemonProcess) -> None:
    out = cli("pause", "--service", "search", "--for", "2h", "--reason", "freeze", url=daemon.url)
    assert out.returncode == 0 and "frozen until 20" in out.stdout and out.stdout.strip().endswith("Z"), out.stdout
    out = cli("pause", "--reason", "everything", url=daemon.url)
    assert out.returncode == 0 and "frozen until `rollbackd resume`" in out.stdout
    assert cli("pause", "--service", "rag", "--reason", "freeze", url=daemon.url).returncode == 0
    out = cli("resume", "--all", url=daemon.url)
    assert out.returncode == 0 and "3 pause/hold cleared" in out.stdout, out.stdout
    status = json.loads(cli("status", "--json", url=daemon.url).stdout)
    assert status["paused"] is None
    assert [status["services"][s]["paused"] for s in ("rag", "search")] == [None, None]
    assert cli("resume", "--all", "--service", "rag", url=daemon.url).returncode == 2


def test_resume_without_service_lifts_the_hold_of_the_only_service(tmp_path: Path) -> None:
    plan = [{"type": "command", "name": "broken", "argv": ["/bin/false"]}]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    with DaemonProcess(cfg) as d:
        status, body = d.api.call("POST", "/v1/trigger", {"reason": "test", "service": "rag"})
        assert status == 202
        d.api.wait_incident(body["id"], ("failed",))
        held = d.api.call("GET", "/v1/status")[1]["services"]["rag"]["held"]
        assert held is not None and held["incident_id"] == body["id"]
        out = cli("resume", url=d.url)  # what the README and the Slack message tell the on-call to run
        assert out.returncode == 0 and "resumed rag: 1 pause/hold cleared" in out.stdout, out.stdout
        assert d.api.call("GET", "/v1/status")[1]["services"]["rag"]["held"] is None
