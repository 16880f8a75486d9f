"""The shipped ops artefacts together, for real: a RAG service whose answers start failing the gates
-> Prometheus with the shipped rules (time-compressed as CI does) -> Alertmanager with the example
config -> a webhook receiver standing in for rollbackd. Then the fault heals and the resolved
notification arrives. No timing is asserted: each stage is waited for."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.ops.common import RULE_FILES
from tests.support.alertmanager import example_config
from tests.support.prometheus import (
    AlertmanagerServer,
    MetricsExporter,
    PrometheusServer,
    ReceivedRequest,
    ScrapeTarget,
    WebhookReceiver,
)
from tests.support.rules_transform import compress

FACTOR = 60  # for: 3m -> 3s, rate(...[3m]) -> [3s]
TOKEN = "pipeline-webhook-token"


class GateCounters:
    """rag_gate_checks_total growing by 100 checks per scrape, `fail_per_100` of them failing, so the
    fail ratio over any window is exactly that fraction, whatever the scrape timing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fail_per_100 = 0
        self.passed = 0
        self.failed = 0

    def render(self) -> str:
        with self._lock:
            self.failed += self.fail_per_100
            self.passed += 100 - self.fail_per_100
            return (
                f'rag_gate_checks_total{{gate="grounded",result="pass"}} {self.passed}\n'
                f'rag_gate_checks_total{{gate="grounded",result="fail"}} {self.failed}\n'
            )

    def set_fail(self, per_100: int) -> None:
        with self._lock:
            self.fail_per_100 = per_100


def _gate_alerts(requests: list[ReceivedRequest], status: str) -> list[dict[str, Any]]:
    return [
        alert
        for request in requests
        for alert in request.json()["alerts"]
        if alert["labels"]["alertname"] == "RAGGateFailRateHigh" and alert["status"] == status
    ]


@pytest.mark.integration
def test_gate_failures_reach_the_webhook_and_resolve(tmp_path: Path) -> None:
    rule_files = []
    for path in RULE_FILES:
        compressed = tmp_path / path.name
        compressed.write_text(compress(path.read_text(), FACTOR))
        rule_files.append(compressed)
    token_file = tmp_path / "webhook-token"
    token_file.write_text(TOKEN + "\n")
    gates = GateCounters()

    with (
        WebhookReceiver() as receiver,
        MetricsExporter() as rag,
        AlertmanagerServer(example_config(receiver.url, token_file)) as am,
        PrometheusServer(
            targets=[ScrapeTarget("rag", rag.address, labels={"service": "rag"})],
            rule_files=rule_files,
            alertmanager_url=am.url,
        ) as prom,
    ):
        rag.set_render(gates.render)
        prom.wait_for('rag:gate_checks_fail:ratio_rate3m{service="rag"} == 0')
        assert not _gate_alerts(receiver.requests, "firing")

        gates.set_fail(9)  # 9 % against the 7 % threshold
        requests = receiver.wait_for(lambda rs: bool(_gate_alerts(rs, "firing")))
        (alert, *_) = _gate_alerts(requests, "firing")
        assert alert["labels"] == {
            "alertname": "RAGGateFailRateHigh",
            "service": "rag",
            "severity": "critical",
            "team": "rag",
        }
        assert alert["annotations"]["summary"].startswith("9% of rag answers fail the quality gates")
        assert alert["annotations"]["runbook_url"].endswith("#raggatefailratehigh")
        request = next(r for r in requests if _gate_alerts([r], "firing"))
        assert request.header("Authorization") == f"Bearer {TOKEN}"
        assert request.json()["groupLabels"] == {"alertname": "RAGGateFailRateHigh", "service": "rag"}

        gates.set_fail(0)
        receiver.wait_for(lambda rs: bool(_gate_alerts(rs, "resolved")))
