"""Confirm-still-firing against a real Prometheus 2.42 (started here, with a rule that fires)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import WEBHOOK_TOKEN, command_service, running_daemon, write_config
from tests.support.prometheus import MetricsExporter, PrometheusServer, ScrapeTarget
from tests.support.slack_recorder import SlackRecorder
from tests.support.tcp_proxy import TcpProxy

RULE = """
groups:
  - name: test
    rules:
      - alert: RAGGateFailRateHigh
        expr: test_gate_fail_ratio > 0.07
        labels: {severity: critical}
"""


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, MetricsExporter]]:
    rules = tmp_path_factory.mktemp("rules") / "test.rules.yml"
    rules.write_text(RULE)
    with (
        MetricsExporter() as exporter,
        PrometheusServer(
            targets=[ScrapeTarget("rag", exporter.address, labels={"service": "rag"})], rule_files=[rules]
        ) as server,
    ):
        yield server, exporter


async def set_ratio(prom: tuple[PrometheusServer, MetricsExporter], value: float, firing: bool) -> None:
    server, exporter = prom
    exporter.set_text(f"test_gate_fail_ratio {value}\n")
    expr = 'ALERTS{alertname="RAGGateFailRateHigh",alertstate="firing",service="rag"}'
    await asyncio.to_thread(server.wait_for, expr, (lambda r: bool(r) == firing), 60)


def payload(base: dict[str, Any], fingerprint: str) -> bytes:
    out = copy.deepcopy(base)
    out["alerts"][0]["fingerprint"] = fingerprint
    return json.dumps(out).encode()


async def run_one(tmp_path: Path, prom_url: str, mode: str, body: bytes, window: str = "1s", **top: Any) -> Any:
    svc = command_service([{"type": "command", "argv": ["/bin/true"]}], confirm=mode, confirm_window=window)
    cfg = write_config(tmp_path, services={"rag": svc}, prometheus={"url": prom_url, "timeout": "2s"}, **top)
    async with running_daemon(cfg) as d, aiohttp.ClientSession() as http:
        async with http.post(
            d.url + "/v1/webhook/alertmanager",
            data=body,
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
        ) as r:
            assert r.status == 202
        (incident,) = await d.core.store.list_incidents("rag", 5)
        await d.core.runner.wait(incident.id)
        final = await d.core.store.get_incident(incident.id)
        events = await d.core.store.events(incident_id=incident.id)
        return final, events


async def test_firing_alert_is_confirmed_and_acted_on(
    tmp_path: Path, prom: Any, firing_payload: dict[str, Any]
) -> None:
    await set_ratio(prom, 0.09, firing=True)
    final, _ = await run_one(tmp_path, prom[0].url, "required", payload(firing_payload, "c0000001"))
    assert final.state.value == "resolved"


async def test_alert_no_longer_firing_is_not_acted_on(
    tmp_path: Path, prom: Any, firing_payload: dict[str, Any]
) -> None:
    await set_ratio(prom, 0.01, firing=False)
    final, events = await run_one(tmp_path, prom[0].url, "required", payload(firing_payload, "c0000002"))
    assert final.state.value == "cancelled" and final.error == "Prometheus no longer reports the alert as firing"
    assert any(e.reason == "not_confirmed" for e in events)


async def test_prometheus_unreachable_required_vs_best_effort(tmp_path: Path, firing_payload: dict[str, Any]) -> None:
    dead = "http://127.0.0.1:9"  # discard port: connection refused
    final, events = await run_one(tmp_path / "a", dead, "required", payload(firing_payload, "c0000003"))
    assert final.state.value == "cancelled" and any(e.reason == "confirm_failed" for e in events)
    assert final.error.startswith("Prometheus could not be asked whether the alert still fires: prometheus:")
    assert "(asked for 1s)" in final.error
    final, _ = await run_one(tmp_path / "b", dead, "best_effort", payload(firing_payload, "c0000004"))
    assert final.state.value == "resolved"


async def test_prometheus_errors_are_asked_again_within_the_window(
    tmp_path: Path, prom: Any, firing_payload: dict[str, Any]
) -> None:
    """One Prometheus error no longer cancels the rollback for good: it is asked again until it answers."""
    await set_ratio(prom, 0.09, firing=True)
    host, port = prom[0].url.removeprefix("http://").split(":")
    async with TcpProxy(host, int(port)) as proxy:
        proxy.cut()

        async def back_later() -> None:
            await asyncio.sleep(1.5)
            proxy.restore()

        healing = asyncio.create_task(back_later())
        final, _ = await run_one(
            tmp_path, f"http://127.0.0.1:{proxy.port}", "required", payload(firing_payload, "c0000005"), window="30s"
        )
        await healing
    assert final.state.value == "resolved"


async def test_a_cancelled_rollback_is_announced_with_its_reason(
    tmp_path: Path, firing_payload: dict[str, Any], slack_recorder: SlackRecorder, monkeypatch: Any
) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_recorder.webhook_url)
    final, _ = await run_one(
        tmp_path,
        "http://127.0.0.1:9",
        "required",
        payload(firing_payload, "c0000006"),
        notify={"type": "slack", "webhook_url": "${SLACK_WEBHOOK_URL}"},
    )
    assert final.state.value == "cancelled"
    await slack_recorder.wait_for_async(lambda r: any("cancelled" in (m.text or "") for m in r.messages()))
    (told,) = [m.text or "" for m in slack_recorder.messages() if "cancelled" in (m.text or "")]
    assert "Prometheus could not be asked whether the alert still fires" in told and "asked for 1s" in told
