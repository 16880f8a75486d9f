"""`alert_cleared` against a real Prometheus scraping the reference RAG service (a subprocess): cleared
only by Prometheus's current state on fresh samples of the service; a stale resolved notification, a
re-fire inside the window, a stopped service and an unreachable/failing/slow Prometheus never PASS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbackd.prom import Prometheus
from rollbackd.reasons import IncidentState, Verdict
from rollbackd.records import Incident, Trigger
from rollbackd.verify import VerifyContext
from rollbackd.verify.alert_cleared import AlertClearedOptions, AlertClearedVerifier
from tests.support import corpus, images, pg
from tests.support.http_stub import JsonHandler, serve
from tests.support.prometheus import PrometheusServer, ScrapeTarget

pytestmark = pytest.mark.integration
ALERT = "RAGGovernanceTest"
RULES = {
    "groups": [
        {
            "name": "t",
            "rules": [{"alert": ALERT, "expr": "max by (service) (rag_governance_violations) > 0", "for": "0s"}],
        }
    ]
}


@dataclass
class World:
    rag: images.RagServiceProcess
    prom: PrometheusServer

    def fault(self, **body: Any) -> None:
        req = urllib.request.Request(
            f"{self.rag.url}/admin/fault",
            data=json.dumps(body).encode() if body else None,
            method="POST" if body else "DELETE",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=5).close()

    def firing(self, service: str = "rag") -> bool:
        return any(
            a["labels"].get("alertname") == ALERT and a["labels"].get("service") == service and a["state"] == "firing"
            for a in self.prom.alerts()
        )

    def wait_firing(self, want: bool) -> None:
        deadline = time.monotonic() + 30
        while self.firing() != want:
            assert time.monotonic() < deadline, f"alert never {'fired' if want else 'cleared'}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    dsn = pg.fresh_database_sync("alertcleared")
    rules = tmp_path_factory.mktemp("rules") / "t.rules.yml"
    rules.write_text(yaml.safe_dump(RULES))
    try:
        asyncio.run(corpus.create_corpus(dsn))
        with images.RagServiceProcess(env={"RAG_PG_DSN": dsn, "RAG_RECORD_CONVERSATIONS": "0"}) as rag:
            gone = f"127.0.0.1:{images.free_port()}"  # a stopped service: its target answers nothing, up = 0
            targets = [
                ScrapeTarget("rag", rag.url.removeprefix("http://"), labels={"service": "rag"}),
                ScrapeTarget("gone", gone, labels={"service": "gone"}),
            ]
            with PrometheusServer(targets=targets, rule_files=[rules]) as prom:
                prom.wait_for('up{service="rag"} == 1')
                prom.wait_for('up{service="gone"} == 0')
                yield World(rag, prom)
    finally:
        pg.drop_database_sync(dsn)


class Rows:
    """The journal's alert rows, as `recent_alerts` returns them (only a hint to the check)."""

    def __init__(self, *rows: dict[str, Any]) -> None:
        self.rows = list(rows)

    async def recent_alerts(self, service: str | None, limit: int) -> list[dict[str, Any]]:
        return self.rows


def incident(service: str = "rag") -> Incident:
    return Incident(
        id="inc-1",
        service=service,
        state=IncidentState.RUNNING,
        dry_run=False,
        created_at=time.time() - 60,
        plan=[{"type": "verify"}],
        trigger=Trigger(
            kind="alert",
            reason="r",
            requested_by="alertmanager",
            alertname=ALERT,
            fingerprint="fp1",
            labels={"service": service},
        ),
    )


async def check(
    url: str, *, service: str = "rag", deadline: float = 8.0, store: Any = None, timeout: float = 2.0, **opts: Any
) -> Any:
    prom = Prometheus(url, timeout=timeout)
    verifier = AlertClearedVerifier(
        AlertClearedOptions.model_validate(
            {"type": "alert_cleared", "interval": "200ms", "stable_for": "2s", "deadline": f"{deadline}s", **opts}
        )
    )
    try:
        ctx = VerifyContext(
            service=service,
            deadline=time.monotonic() + deadline,
            incident=incident(service),
            prometheus=prom,
            store=store,
        )
        return await verifier.verify(ctx)
    finally:
        await prom.close()


async def test_cleared_on_fresh_samples_and_stable(world: World) -> None:
    world.fault(governance={"missing_owner": 1})
    await asyncio.to_thread(world.wait_firing, True)
    world.fault()
    result = await check(world.prom.url)
    assert result.verdict is Verdict.PASS, result.summary
    assert result.summary.startswith(f"{ALERT} cleared and stayed clear for 2s")


async def test_a_stale_resolved_notification_does_not_clear_a_firing_alert(world: World) -> None:
    """Alertmanager said resolved, then the alert fired again: Prometheus says firing, so FAIL."""
    world.fault(governance={"missing_owner": 1})
    try:
        await asyncio.to_thread(world.wait_firing, True)
        rows = Rows(
            {"fingerprint": "fp1", "status": "resolved", "received_at": time.time() - 30},
            {"fingerprint": "fp1", "status": "firing", "received_at": time.time() - 10},
        )
        result = await check(world.prom.url, store=rows, deadline=3.0, stable_for="1s")
    finally:
        world.fault()
    assert result.verdict is Verdict.FAIL and result.summary.startswith(f"{ALERT} still firing after"), result.summary
    assert result.details["hint"] == "latest notification since the incident opened: firing"


async def test_a_refire_inside_the_window_fails(world: World) -> None:
    world.fault()
    await asyncio.to_thread(world.wait_firing, False)

    async def refire() -> None:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(world.fault, governance={"review_overdue": 2})

    try:
        result, _ = await asyncio.gather(check(world.prom.url, stable_for="6s", deadline=10.0), refire())
    finally:
        world.fault()
    assert result.verdict is Verdict.FAIL and f"{ALERT} fired again" in result.summary, result.summary


async def test_a_stopped_service_proves_nothing(world: World) -> None:
    """The service is down (up == 0): its rule has no data, the alert cannot fire: INCONCLUSIVE."""
    result = await check(world.prom.url, service="gone", deadline=3.0, stable_for="1s")
    assert result.verdict is Verdict.INCONCLUSIVE, result.summary
    assert result.summary == (
        f'cannot tell whether {ALERT} cleared: no sample of the service: up{{service="gone"}} == 1 returns nothing'
    )


class Broken(JsonHandler):
    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        time.sleep(self.server.delay)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the slow case: the client gave up
            self.send_json(self.server.status, {"status": "error", "error": "overloaded"})


@pytest.mark.parametrize(("status", "delay"), [(503, 0.0), (200, 3.0)], ids=["503", "slow"])
async def test_prometheus_failing_or_slow_is_an_error_not_still_firing(world: World, status: int, delay: float) -> None:
    rows = Rows({"fingerprint": "fp1", "status": "firing", "received_at": time.time()})
    with serve(Broken, status=status, delay=delay) as stub:
        result = await check(stub.url, store=rows, deadline=3.0, stable_for="1s", timeout=1.0)
    assert result.verdict is Verdict.ERROR, result.summary
    assert result.summary.startswith(f"could not tell whether {ALERT} cleared: Prometheus: ")
    assert "still firing" not in result.summary


async def test_prometheus_unreachable_is_an_error(world: World, tmp_path: Path) -> None:
    result = await check(f"http://127.0.0.1:{images.free_port()}", deadline=2.0, stable_for="1s")
    assert result.verdict is Verdict.ERROR and "Cannot connect to host" in result.summary, result.summary
