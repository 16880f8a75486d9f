"""Acceptor processes (webhook.acceptors): a real daemon with one acceptor on its port, each taking new
connections as the kernel spreads them. What a client sees must not depend on which process took it:

- a storm the acceptor decides alone is journaled before its 202, even while the daemon's loop is
  frozen, and the daemon's metrics and Slack count it once (one coalesced message for both processes);
- what may act, what resolves and every API call is the daemon's, whichever process took it;
- an acceptor killed -9 is started again; a daemon killed -9 takes its acceptor with it, and a new
  daemon gets the port at once; every alert answered 202 is in the journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_fixture, relabel
from tests.integration.test_group_commit import client, journaled_postgres, journaled_sqlite, storm_body
from tests.support.daemon import WEBHOOK_TOKEN, DaemonProcess, command_service, secret_ref, write_config
from tests.support.pg import drop_database_sync, fresh_database_sync
from tests.support.slack_recorder import SlackRecorder
from tests.support.tcp_proxy import ThreadedProxy

NOOP = [{"type": "command", "name": "noop", "argv": ["/bin/true"]}]
TRIES = 16  # new connections: the chance that none lands on the acceptor is 2**-16


def daemon_with_acceptor(tmp_path: Path, state: dict[str, Any], **top: Any) -> DaemonProcess:
    services = {
        "rag": command_service(NOOP, notify_alerts=["StormNoise"], rollback_alerts=["ActNow"], cooldown="0s"),
        **{f"svc{n}": command_service(NOOP, rollback_alerts=["ActNow"]) for n in range(6)},
        "slow": command_service(NOOP, notify_alerts=["StormNoise"], rollback_alerts=["ActNow"], start_delay="60s"),
    }
    cfg = write_config(tmp_path, services=services, state=state, webhook={"acceptors": 1}, **top)
    return DaemonProcess(cfg, env={"ROLLBACKD_LOG_LEVEL": "info"})


def start(daemon: DaemonProcess) -> None:
    """Started, its acceptor serving (the daemon answers from its own socket until then)."""
    daemon.start()
    wait_for(lambda: metric(daemon, "rollbackd_acceptors") == 1, what="the acceptor serving")


def metric(daemon: DaemonProcess, name: str, labels: str = "") -> float:
    status, text = daemon.api.call("GET", "/metrics")
    assert status == 200
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text.decode(), re.M)
    return float(found.group(1)) if found else 0.0


def wait_for(predicate: Any, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # a connection the killed acceptor had taken is reset
            if predicate():
                return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def acceptor_pid(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    out = subprocess.run(["pgrep", "-P", str(daemon.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def answers(daemon: DaemonProcess, bodies: dict[str, bytes], timeout: float) -> dict[str, int]:
    """Each body on a new connection: its answer's status by name (0: no answer in ``timeout``)."""
    out = {}
    for name, body in bodies.items():
        try:
            out[name] = daemon.api.call(
                "POST", "/v1/webhook/alertmanager", raw=body, token=WEBHOOK_TOKEN, timeout=timeout
            )[0]
        except OSError:
            out[name] = 0
    return out


def storm(tags: list[str]) -> dict[str, bytes]:
    return {tag: storm_body(tag) for tag in tags}


def post_storm(daemon: DaemonProcess, tags: list[str], timeout: float) -> list[str]:
    """The tags answered 202."""
    return [tag for tag, status in answers(daemon, storm(tags), timeout).items() if status == 202]


def store_state(tmp_path: Path, store: str) -> tuple[dict[str, Any], str | None]:
    dsn = fresh_database_sync("acceptors") if store == "postgres" else None
    if dsn:
        return {"type": "postgres", "dsn": secret_ref("ACCEPTORS_DSN", dsn)}, dsn
    return {"type": "sqlite", "path": str(tmp_path / "state.db")}, None


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_acceptor_journals_a_storm_while_the_daemon_is_frozen_and_the_daemon_tells_it_once(
    tmp_path: Path, store: str, slack_recorder: SlackRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack_recorder.token)
    notify = {"type": "slack", "bot_token": "${SLACK_BOT_TOKEN}", "channel": "C1", "base_url": slack_recorder.base_url}
    state, dsn = store_state(tmp_path, store)
    daemon = daemon_with_acceptor(tmp_path, state, notify=notify)
    start(daemon)
    try:
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGSTOP)  # the daemon's loop frozen: only the acceptor answers
        try:
            frozen = post_storm(daemon, [f"frozen{n}" for n in range(TRIES)], timeout=1.0)
        finally:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        assert frozen, "no request reached the acceptor"
        later = post_storm(daemon, [f"later{n}" for n in range(TRIES)], timeout=10)
        assert len(later) == TRIES
        journaled = journaled_postgres(dsn) if dsn else journaled_sqlite(tmp_path / "state.db")
        assert set(frozen + later) <= journaled
        count = len(journaled)  # the frozen daemon may have journaled some its clients gave up on
        notified = 'rollbackd_alerts_total{decision="notify",reason="notify_rule",service="rag"}'
        wait_for(lambda: metric(daemon, notified) == count, what=f"{count} alerts counted by the daemon")
        wait_for(lambda: metric(daemon, "rollbackd_webhooks_total", '{result="accepted"}') >= count)
        # One coalesced message per service and reason, whichever process decided: not one per process.
        slack_recorder.wait_for(lambda s: len(s.messages()) >= 1)
        time.sleep(0.5)  # a second message would come with the next report
        assert len(slack_recorder.messages()) == 1, [m.text for m in slack_recorder.messages()]
    finally:
        daemon.stop()
        if dsn:
            drop_database_sync(dsn)
    log = daemon.log.read_text()
    assert '"acceptor_serving"' in log and '"acceptor_stopped"' in log


def test_what_may_act_and_the_api_are_the_daemons_whichever_process_takes_them(tmp_path: Path) -> None:
    daemon = daemon_with_acceptor(tmp_path, {"type": "sqlite", "path": str(tmp_path / "state.db")})
    start(daemon)
    try:
        bodies = [
            relabel(load_fixture("alertmanager-0.25-firing.json"), alertname="ActNow", service=f"svc{n}")
            for n in range(6)
        ]
        for n, body in enumerate(bodies):
            body["alerts"][0]["fingerprint"] = f"act{n}"  # six alerts, not one re-sent
        answers = [daemon.api.webhook(body) for body in bodies]
        assert [status for status, _ in answers] == [202] * 6
        assert [a["decisions"][0]["action"] for _, a in answers] == ["rollback"] * 6
        for _ in range(TRIES):  # API calls and the metrics, through either process
            status, _ = daemon.api.call("GET", "/v1/incidents")
            assert status == 200
        wait_for(
            lambda: (
                {i["service"] for i in daemon.api.call("GET", "/v1/incidents")[1]["incidents"]}
                >= {f"svc{n}" for n in range(6)}
            )
        )
        for incident in daemon.api.call("GET", "/v1/incidents")[1]["incidents"]:
            assert daemon.api.wait_incident(incident["id"], ("resolved", "failed"))["state"] == "resolved"
        again = [daemon.api.webhook(body) for body in bodies for _ in range(4)]  # Alertmanager's re-sends
        assert {a["decisions"][0]["reason"] for _, a in again} == {"duplicate"}
        assert len(daemon.api.call("GET", "/v1/incidents")[1]["incidents"]) == 6  # no second incident
        assert daemon.api.call("GET", "/v1/status", token="wrong")[0] == 401  # auth is the daemon's too
        assert daemon.api.call("GET", "/v1/status")[1]["acceptors"] == {"configured": 1, "serving": 1}
        wait_for(lambda: metric(daemon, "rollbackd_acceptor_handoffs_total") >= 1, what="a handoff")
    finally:
        daemon.stop()


def resolved_body(tag: str, alertname: str, service: str, fingerprint: str) -> bytes:
    body = relabel(load_fixture("alertmanager-0.25-resolved.json"), alertname=alertname, service=service)
    body["groupKey"] = f'{{}}:{{alertname="{alertname}", n="{tag}"}}'
    body["alerts"][0]["fingerprint"] = fingerprint
    return json.dumps(body).encode()


def posted(daemon: DaemonProcess, bodies: list[bytes], timeout: float) -> list[int]:
    """The statuses answered (a request that timed out has none)."""
    return [status for status in answers(daemon, {str(n): b for n, b in enumerate(bodies)}, timeout).values() if status]


def test_resolutions_are_the_acceptors_unless_they_may_cancel_a_pending_rollback(tmp_path: Path) -> None:
    daemon = daemon_with_acceptor(tmp_path, {"type": "sqlite", "path": str(tmp_path / "state.db")})
    start(daemon)
    try:
        firing = relabel(load_fixture("alertmanager-0.25-firing.json"), alertname="ActNow", service="slow")
        status, answer = daemon.api.webhook(firing)
        assert status == 202 and answer["decisions"][0]["action"] == "rollback", answer
        (incident,) = daemon.api.call("GET", "/v1/incidents")[1]["incidents"]
        assert incident["state"] == "pending"  # start_delay: 60 s
        opened_by = firing["alerts"][0]["fingerprint"]
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGSTOP)  # only the acceptor answers, and only what it may decide
        try:
            quiet = posted(daemon, [resolved_body(f"q{n}", "StormNoise", "rag", f"q{n}") for n in range(TRIES)], 1.0)
            # notify-only too, but its fingerprint opened the pending rollback: the daemon's to cancel
            cancelling = posted(
                daemon, [resolved_body(f"c{n}", "StormNoise", "slow", opened_by) for n in range(8)], 1.0
            )
        finally:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        assert quiet and set(quiet) == {202}, quiet
        assert cancelling == []  # never decided alone, never a 202 without the daemon
        final = daemon.api.wait_incident(incident["id"], ("cancelled", "resolved", "failed"))
        assert final["state"] == "cancelled", final
    finally:
        daemon.stop()


def test_a_killed_acceptor_starts_again_and_a_killed_daemon_takes_its_acceptor(tmp_path: Path) -> None:
    daemon = daemon_with_acceptor(tmp_path, {"type": "sqlite", "path": str(tmp_path / "state.db")})
    start(daemon)
    accepted: list[str] = []
    try:
        first = acceptor_pid(daemon)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: metric(daemon, "rollbackd_acceptor_exits_total") == 1, what="the exit counted")
        wait_for(lambda: metric(daemon, "rollbackd_acceptors") == 1, what="a new acceptor serving")
        second = acceptor_pid(daemon)
        assert second != first
        port = int(daemon.url.rsplit(":", 1)[1])
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(port, f"k{c}", stop, accepted)) for c in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        daemon.kill9()  # mid-storm
        wait_for(lambda: gone(second), timeout=15, what="the acceptor gone with its daemon")
        stop.set()
        for thread in threads:
            thread.join(10)
        start(daemon)  # the same port at once: the acceptor's socket went with it
        assert post_storm(daemon, ["after"], timeout=10) == ["after"]
    finally:
        daemon.stop()
    assert len(accepted) > 50, len(accepted)
    missing = set(accepted) - journaled_sqlite(tmp_path / "state.db")
    assert not missing, f"{len(missing)} of {len(accepted)} answered 202 but not journaled"
    assert '"acceptor_exited"' in daemon.log.read_text()


def statuses(daemon: DaemonProcess, tags: list[str]) -> dict[str, int]:
    return answers(daemon, storm(tags), timeout=20)


def test_the_journal_cut_from_both_processes_is_a_503_never_a_lost_202(tmp_path: Path) -> None:
    dsn = fresh_database_sync("acceptorcut")
    try:
        with ThreadedProxy("127.0.0.1", 5432) as proxy:
            proxied = dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
            state = {"type": "postgres", "dsn": secret_ref("ACCEPTOR_CUT_DSN", proxied), "timeout": 2}
            daemon = daemon_with_acceptor(tmp_path, state)
            start(daemon)
            try:
                before = statuses(daemon, [f"before{n}" for n in range(TRIES)])
                proxy.cut()
                during = statuses(daemon, [f"during{n}" for n in range(TRIES)])
                proxy.restore()
                after: dict[str, int] = {}
                wait_for(lambda: after.update(statuses(daemon, [f"after{len(after)}"])) or 202 in after.values())
                after.update(statuses(daemon, [f"later{n}" for n in range(TRIES)]))
            finally:
                daemon.stop()
        journaled = journaled_postgres(dsn)
    finally:
        drop_database_sync(dsn)
    assert set(before.values()) == {202}
    assert set(during.values()) == {503}, during  # refused out loud by whichever process took it
    assert [t for t, s in after.items() if t.startswith("later") and s != 202] == []
    accepted = {t for answers in (before, during, after) for t, s in answers.items() if s == 202}
    assert accepted <= journaled
    log = daemon.log.read_text()
    assert '"process":"acceptor-0"' in log and '"store_error"' in log
    assert any('"store_error"' in line and '"process":"acceptor-0"' in line for line in log.splitlines())


def test_a_second_daemon_with_acceptors_on_the_port_is_refused_by_name(tmp_path: Path) -> None:
    first = daemon_with_acceptor(tmp_path / "a", {"type": "sqlite", "path": str(tmp_path / "a.db")})
    start(first)
    try:
        cfg = (tmp_path / "a" / "rollbackd.yaml").read_text().replace(str(tmp_path / "a.db"), str(tmp_path / "b.db"))
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "rollbackd.yaml").write_text(cfg)
        second = DaemonProcess(tmp_path / "b" / "rollbackd.yaml")
        ran = subprocess.run(
            [sys.executable, "-m", "rollbackd", "serve", "--config", str(second.config)],
            env=second.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ran.returncode != 0
        assert "another rollbackd with acceptors already listens on 127.0.0.1:" in ran.stdout + ran.stderr
        assert first.api.call("GET", "/readyz")[0] == 200
    finally:
        first.stop()


def test_acceptors_need_a_journal_they_can_open(tmp_path: Path) -> None:
    from rollbackd.errors import ConfigError
    from tests.support.daemon import load_settings

    cfg = write_config(
        tmp_path,
        services={"rag": command_service(NOOP)},
        state={"type": "sqlite", "path": ":memory:"},
        webhook={"acceptors": 1},
    )
    with pytest.raises(ConfigError, match=r"webhook\.acceptors: 1 acceptor processes need a journal"):
        load_settings(cfg)
