"""The reusable helpers in tests/support: components, exporter, Prometheus, Alertmanager, receiver."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.components import require_binary
from tests.support.prometheus import (
    AlertmanagerServer,
    MetricsExporter,
    PrometheusError,
    PrometheusServer,
    ScrapeTarget,
    WebhookReceiver,
    free_port,
)


def test_require_binary_finds_a_binary() -> None:
    path = require_binary("sh", "dash")
    assert os.path.isabs(path) and os.access(path, os.X_OK)


def test_require_binary_fails_naming_the_package() -> None:
    with pytest.raises(pytest.fail.Exception) as failure:
        require_binary("no-such-binary-rollbackd", "no-such-package")
    message = str(failure.value)
    assert "no-such-package" in message and "scripts/test" in message


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        assert sock.getsockname() == ("127.0.0.1", port)


def test_each_xdist_worker_picks_ports_from_its_own_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port one worker's test frees for a moment (a daemon killed and restarted on it) is never another
    worker's pick: the slices of the range below the ephemeral ports do not overlap."""
    from tests.support import ports

    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    slices = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        low, high = ports.worker_slice()
        picked = {ports.free_port() for _ in range(10)}
        assert all(low <= p < high for p in picked), (worker, low, high, picked)
        slices.append((low, high))
    assert slices[0][1] <= slices[1][0] and slices[1][1] <= slices[2][0], slices


def test_metrics_exporter_serves_settable_text() -> None:
    with MetricsExporter("a 1\n") as exporter:
        with urllib.request.urlopen(exporter.url, timeout=5) as response:
            assert response.read() == b"a 1\n"
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        exporter.set_text("a 2\n")
        with urllib.request.urlopen(exporter.url, timeout=5) as response:
            assert response.read() == b"a 2\n"
        exporter.set_render(lambda: f"calls {exporter.scrapes}\n")
        with urllib.request.urlopen(exporter.url, timeout=5) as response:
            assert response.read() == b"calls 3\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://{exporter.address}/other", timeout=5)
        assert missing.value.code == 404
        missing.value.close()


@pytest.mark.integration
def test_prometheus_server_scrapes_queries_and_stops(tmp_path: Path) -> None:
    with MetricsExporter('thing{kind="x"} 42\n') as exporter:
        server = PrometheusServer(
            targets=[ScrapeTarget("app", exporter.address, labels={"service": "rag"})], workdir=tmp_path / "prom"
        )
        with server as prom:
            assert prom.url == f"http://127.0.0.1:{prom.port}"
            result = prom.wait_for('thing{service="rag",job="app"}')
            assert result[0]["value"][1] == "42"
            assert prom.wait_for("thing", lambda r: r[0]["metric"]["kind"] == "x")
            with pytest.raises(PrometheusError, match="bad_data"):
                prom.query("sum(")
            with pytest.raises(TimeoutError):
                prom.wait_for("nothing_here", timeout=0.5)
            pid_alive = prom.running
        assert pid_alive and not server.running
        assert (tmp_path / "prom" / "prometheus.yml").exists()  # a given workdir is kept


@pytest.mark.integration
def test_prometheus_server_reports_a_bad_config() -> None:
    server = PrometheusServer(config={"global": {"scrape_interval": "not-a-duration"}}, startup_timeout=30)
    with pytest.raises(PrometheusError, match="exited"):
        server.start()
    assert not server.running and not server.dir.exists()


@pytest.mark.integration
def test_alertmanager_server_and_webhook_receiver(tmp_path: Path) -> None:
    with WebhookReceiver(status=200) as receiver:
        config = (
            "route:\n  receiver: hook\n  group_wait: 0s\n  group_interval: 1s\n"
            f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: {receiver.url}/hook\n"
        )
        with AlertmanagerServer(config) as am:
            assert am.url == f"http://127.0.0.1:{am.port}"
            am.post_alerts([{"labels": {"alertname": "Probe", "service": "rag"}}])
            (request, *_) = receiver.wait_for(bool)
            body = request.json()
            assert body["receiver"] == "hook" and body["alerts"][0]["labels"]["alertname"] == "Probe"
            assert body["externalURL"] == am.url
            assert request.path == "/hook"
            assert json.loads(request.body) == body
            assert am.alerts(active="true")[0]["labels"]["alertname"] == "Probe"
        assert not am.running
