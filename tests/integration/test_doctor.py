"""`rollbackd doctor` against the shipped example configs, for real: Prometheus from
config/prometheus.example.yml, Alertmanager from config/alertmanager.example.yml (only addresses and
paths substituted, the shipped timings kept), rollbackd from config/rollbackd.example.yaml, and a RAG
metric source that follows the metric contract. Every check of the chain is green; a test alert
arrives and is never acted on; without the service label, doctor names the scrape job that lacks it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.alertmanager import example_config
from tests.support.daemon import REPO, TEST_ENV, WEBHOOK_TOKEN, DaemonProcess, free_port
from tests.support.examples import prometheus_config, rag_metrics, rollbackd_config
from tests.support.prometheus import AlertmanagerServer, MetricsExporter, PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
# The shipped 15 s scrape interval: the first samples, a rate with two of them and the baseline's
# round trip (rollbackd measures, exports, is scraped) take a few intervals.
WAIT = 120.0
DIGEST = "sha256:" + "ab" * 32


@dataclass
class Stack:
    tmp: Path
    config: Path
    daemon: DaemonProcess
    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer
    rag: MetricsExporter


def doctor(config: Path, *args: str, webhook_token: str = WEBHOOK_TOKEN) -> tuple[int, Any, str]:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO / "daemon"),
        **TEST_ENV,
        "ROLLBACKD_WEBHOOK_TOKEN": webhook_token,
    }
    out = subprocess.run(
        [sys.executable, "-m", "rollbackd", "doctor", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=200,
        check=False,
    )
    body = json.loads(out.stdout) if "--json" in args and out.stdout.strip().startswith("{") else None
    return out.returncode, body, out.stdout + out.stderr


def by_name(body: Any) -> dict[str, dict[str, Any]]:
    return {c["check"] + (f"[{c['subject']}]" if c["subject"] else ""): c for c in body["checks"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("doctor")
    listen = f"127.0.0.1:{free_port()}"
    token_file = tmp / "webhook-token"
    token_file.write_text(WEBHOOK_TOKEN + "\n")
    with (
        MetricsExporter() as rag,
        AlertmanagerServer(example_config(f"http://{listen}", token_file, fast=False)) as am,
        PrometheusServer(
            config=prometheus_config(rag=rag.address, rollbackd=listen, alertmanager=am.url.removeprefix("http://"))
        ) as prom,
    ):
        rag.set_render(rag_metrics())
        config = rollbackd_config(tmp, listen=listen, prometheus=prom.url, alertmanager=am.url)
        with DaemonProcess(config) as daemon:
            yield Stack(tmp, config, daemon, prom, am, rag)


def _record_green_release(stack: Stack) -> None:
    """README step 3: the live release recorded and marked green while it serves traffic."""
    prom = stack.prometheus
    # The baseline is a rate over the service's latency histogram: it needs two samples.
    prom.wait_for('count_over_time(rag_http_request_duration_seconds_count{service="rag"}[30m]) >= 2', timeout=WAIT)
    status, body = stack.daemon.api.call(
        "POST", "/v1/releases", {"service": "rag", "version": "v1", "image": "rag:v1", "digest": DIGEST}
    )
    assert status == 201, body
    status, body = stack.daemon.api.call("POST", "/v1/releases/v1/green", {"service": "rag", "reason": "known good"})
    assert status == 200, body
    assert body["baseline_p95_s"] == pytest.approx(0.25 + 0.25 * 5 / 7, rel=1e-3)
    prom.wait_for('rollbackd_baseline_latency_p95_seconds{service="rag",job="rollbackd"}', timeout=WAIT)


def test_every_check_is_green_with_the_shipped_configs_and_the_test_alert_is_never_acted_on(stack: Stack) -> None:
    stack.prometheus.wait_for('up{job="rollbackd"} == 1', timeout=WAIT)
    code, body, text = doctor(stack.config, "--json")
    # Before any release is recorded the chain is broken, and doctor says how to mend it.
    assert code == 1, text
    checks = by_name(body)
    assert checks["releases[rag]"]["status"] == "fail"
    assert "rollbackd release record" in checks["releases[rag]"]["fix"]
    assert checks["baseline[rag]"]["status"] == "fail"

    _record_green_release(stack)
    code, body, text = doctor(stack.config, "--json", "--send-test-alert", "--timeout", "90")
    assert code == 0, text
    checks = by_name(body)
    green = {
        "rollbackd",
        "prometheus",
        "series[rag]",
        "rules",
        "scraped",
        "baseline[rag]",
        "alertmanager",
        "routing[rag]",
        "test_alert[rag]",
        "releases[rag]",
    }
    assert {n for n, c in checks.items() if c["status"] == "ok"} == green, text
    # What this example does not configure is skipped, never failed or warned about.
    assert {c["status"] for n, c in checks.items() if n not in green} <= {"skip"}, text
    assert "job 'rag'" not in checks["series[rag]"]["detail"] and "job rag" in checks["series[rag]"]["detail"]
    assert "matches auth.webhook_token" in checks["routing[rag]"]["detail"]
    assert "also sent to receiver(s) humans" in checks["test_alert[rag]"]["detail"]

    # The test alert was recorded as a test, and nothing was acted on.
    status, incidents = stack.daemon.api.call("GET", "/v1/incidents")
    assert status == 200 and incidents["incidents"] == []
    status, body = stack.daemon.api.call("GET", "/v1/status")
    decisions = body["services"]["rag"]["last_decisions"]
    assert decisions and {d["reason"] for d in decisions} == {"test_alert"}
    assert {d["alertname"] for d in decisions} == {"RollbackdDoctorTest"}


def test_text_output_is_one_line_per_check_with_the_fix(stack: Stack) -> None:
    code, _, text = doctor(stack.config, webhook_token="another-webhook-token-0123456789")
    lines = text.strip().splitlines()
    assert code == 1
    routing = next(line for line in lines if line.split()[1:2] == ["routing[rag]"])
    assert routing.startswith("FAIL")
    assert "holds another token than auth.webhook_token" in routing and "-> write rollbackd's webhook token" in routing
    assert "another-webhook-token" not in text and WEBHOOK_TOKEN not in text  # secrets never printed
    assert lines[-1].endswith("skipped") and "1 failed" in lines[-1]


def test_without_the_service_label_doctor_names_the_scrape_job(tmp_path: Path) -> None:
    """Three faults of a first hour at once: the RAG job without its service label, only the RAG rule
    file loaded, rollbackd not running where Prometheus scrapes it."""
    listen = f"127.0.0.1:{free_port()}"
    with (
        MetricsExporter() as rag,
        PrometheusServer(
            config=prometheus_config(
                rag=rag.address,
                rollbackd=listen,
                alertmanager="127.0.0.1:9",
                drop_service_label=True,
                rule_glob="rag.rules.yml",
            )
        ) as prom,
    ):
        rag.set_render(rag_metrics())
        prom.wait_for('rag_http_requests_total{job="rag"}', timeout=WAIT)
        prom.wait_for('up{job="rollbackd"} == 0', timeout=WAIT)
        config = rollbackd_config(tmp_path, listen=listen, prometheus=prom.url, alertmanager="http://127.0.0.1:9")
        code, body, text = doctor(config, "--json")
    assert code == 1
    checks = by_name(body)
    series = checks["series[rag]"]
    assert series["status"] == "fail", text
    assert "scrape job 'rag' have no `service` label" in series["detail"]
    assert "give job 'rag' the target label `service: rag`" in series["fix"]
    rules = checks["rules"]
    assert rules["status"] == "fail" and "missing: RollbackdBudgetExhausted, RollbackdDown," in rules["detail"]
    assert "RAGGateFailRateHigh" not in rules["detail"]
    scraped = checks["scraped"]
    assert (
        scraped["status"] == "fail"
        and f"job rollbackd scrapes http://{listen}/metrics but it is down" in scraped["detail"]
    )
    # The daemon and Alertmanager are not running: said once each, and what needs them is skipped.
    assert checks["rollbackd"]["status"] == "fail" and "start the daemon" in checks["rollbackd"]["fix"]
    assert checks["alertmanager"]["status"] == "fail" and checks["routing"]["status"] == "skip"
    assert checks["releases"]["status"] == "skip" and checks["test_alert"]["status"] == "skip"
