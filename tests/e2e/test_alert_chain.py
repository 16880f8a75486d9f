"""The alert chain for real: a RAG service's gate failures -> Prometheus with the shipped rules
(time-compressed, see tests/e2e/stack.py) -> Alertmanager with config/alertmanager.example.yml ->
`rollbackd serve` -> an incident, its Slack thread, and the resolved notification. A flaky proxy in
front of rollbackd answers 503 first, so Alertmanager's retries arrive: still one incident."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import FACTOR, RULE_FILES, wait_until
from tests.support.alertmanager import example_config
from tests.support.daemon import WEBHOOK_TOKEN, DaemonProcess, command_service, write_config
from tests.support.prometheus import AlertmanagerServer, MetricsExporter, PrometheusServer, ScrapeTarget
from tests.support.rules_transform import compress
from tests.support.slack_recorder import SlackRecorder

pytestmark = pytest.mark.e2e


class GateCounters:
    """rag_gate_checks_total growing by 100 per scrape, `fail` of them failing: an exact ratio."""

    def __init__(self) -> None:
        self.fail, self.passed, self.failed = 0, 0, 0
        self.lock = threading.Lock()

    def render(self) -> str:
        with self.lock:
            self.failed += self.fail
            self.passed += 100 - self.fail
            return (
                f'rag_gate_checks_total{{gate="grounding",result="pass"}} {self.passed}\n'
                f'rag_gate_checks_total{{gate="grounding",result="fail"}} {self.failed}\n'
            )


class FlakyProxy:
    """Forwards to rollbackd, but answers 503 to the first `failures` requests (Alertmanager retries)."""

    def __init__(self, target: str, failures: int) -> None:
        self.failures = failures
        self.bodies: list[bytes] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.bodies.append(body)
                if proxy.failures > 0:
                    proxy.failures -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                req = urllib.request.Request(
                    target + self.path,
                    data=body,
                    method="POST",
                    headers={"Authorization": self.headers["Authorization"], "Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        status, data = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_gate_failure_to_incident_with_retries_and_resolve(tmp_path: Path) -> None:
    rules = []
    for path in RULE_FILES:
        (tmp_path / path.name).write_text(compress(path.read_text(), max(FACTOR, 60)))
        rules.append(tmp_path / path.name)
    token_file = tmp_path / "token"
    token_file.write_text(WEBHOOK_TOKEN)
    gates = GateCounters()
    marker = tmp_path / "rolled-back"
    script = f"echo $ROLLBACKD_ALERTNAME >> {marker}"
    plan = [{"type": "command", "name": "rollback", "argv": ["/bin/sh", "-c", script]}]
    with SlackRecorder() as slack, MetricsExporter() as rag:
        rag.set_render(gates.render)
        svc = command_service(plan)
        notify = {"type": "slack", "bot_token": "${SLACK_BOT_TOKEN}", "channel": "C0RAG", "base_url": slack.base_url}
        cfg = write_config(tmp_path, services={"rag": svc}, notify=notify)
        with DaemonProcess(cfg, env={"SLACK_BOT_TOKEN": slack.token}) as daemon:
            proxy = FlakyProxy(daemon.url, failures=2)
            try:
                with (
                    AlertmanagerServer(example_config(proxy.url, token_file)) as am,
                    PrometheusServer(
                        targets=[ScrapeTarget("rag", rag.address, labels={"service": "rag"})],
                        rule_files=rules,
                        alertmanager_url=am.url,
                    ) as prom,
                ):
                    prom.wait_for('rag:gate_checks_fail:ratio_rate3m{service="rag"} == 0')
                    gates.fail = 9  # 9 % of answers fail the gates, against the 7 % threshold
                    incidents = wait_until(
                        lambda: daemon.api.call("GET", "/v1/incidents")[1]["incidents"], 120, "an incident"
                    )
                    final = daemon.api.wait_incident(incidents[0]["id"], ("resolved",), timeout=60)
                    assert final["trigger"]["alertname"] == "RAGGateFailRateHigh"
                    gates.fail = 0
                    wait_until(
                        lambda: any(row["status"] == "resolved" for row in alert_rows(daemon)),
                        120,
                        "the resolved notification",
                    )
                    # Alertmanager kept re-sending the firing group meanwhile (group_interval 1s).
                    wait_until(lambda: len(proxy.bodies) >= 4, 60, "Alertmanager's repeats")
            finally:
                proxy.close()
            assert proxy.failures == 0  # the two 503s were answered by Alertmanager's retries
            incidents = daemon.api.call("GET", "/v1/incidents")[1]["incidents"]
            assert len(incidents) == 1, incidents
            assert marker.read_text().splitlines() == ["RAGGateFailRateHigh"]
        (root,) = slack.roots()
        assert "RAGGateFailRateHigh" in root.text
        assert any("rollback" in m.text and "done" in m.text for m in slack.thread(root.ts))
        assert "resolved" in slack.updates(root.ts)[-1].text


def alert_rows(daemon: DaemonProcess) -> list[dict[str, Any]]:
    status = daemon.api.call("GET", "/v1/status")[1]
    return [{"status": "resolved"} for d in status["services"]["rag"]["last_decisions"] if d["reason"] == "resolved"]
