"""The latency baseline from a real Prometheus: a histogram fed by an exporter, measured when a release
turns green, exported as rollbackd_baseline_latency_p95_seconds{service}, never moved by a bad release;
and the automatic green mark after green_after, blocked while a RAG alert of the service fires."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from rollbackd.deploy import BaselineOptions
from rollbackd.deploy.baseline import baseline_expr
from rollbackd.deploy.ledger import Ledger
from rollbackd.metrics import Metrics
from rollbackd.prom import Prometheus
from rollbackd.reasons import Verdict
from rollbackd.state.sqlite import SqliteStateStore
from rollbackd.verify import CheckResult
from tests.support.prometheus import MetricsExporter, PrometheusServer, ScrapeTarget

pytestmark = pytest.mark.integration
BUCKETS = ("0.1", "0.25", "0.5", "1", "+Inf")


class Feed:
    """Per scrape, 100 requests: `fast` of them at <= 0.25 s, the rest at <= 0.5 s (or <= 1 s when slow)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(BUCKETS, 0)
        self.fast = 90
        self.slow = False
        self.block = 1  # feeds the test alert RAGTestBlock (fires while 1)

    def render(self) -> str:
        adds = {"0.1": 0, "0.25": self.fast, "0.5": 100 if not self.slow else self.fast, "1": 100, "+Inf": 100}
        lines = ["# TYPE rag_http_request_duration_seconds histogram"]
        for le in BUCKETS:
            self.counts[le] += adds[le]
            lines.append(f'rag_http_request_duration_seconds_bucket{{route="/query",le="{le}"}} {self.counts[le]}')
        lines += [
            f'rag_http_request_duration_seconds_count{{route="/query"}} {self.counts["+Inf"]}',
            f"rag_test_block {self.block}",
        ]
        return "\n".join(lines) + "\n"


@pytest.fixture
def prom(tmp_path: Path) -> Iterator[tuple[PrometheusServer, Feed]]:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "t",
                        "rules": [
                            {"alert": "RAGTestBlock", "expr": "rag_test_block == 1", "labels": {"severity": "warning"}}
                        ],
                    }
                ]
            }
        )
    )
    feed = Feed()
    with MetricsExporter() as exporter:
        exporter.set_render(feed.render)
        with PrometheusServer(
            targets=[ScrapeTarget("rag", exporter.address, labels={"service": "rag"})], rule_files=[rules]
        ) as server:
            server.wait_for('rate(rag_http_request_duration_seconds_count{service="rag"}[15s]) > 0')
            yield server, feed


@pytest.fixture
async def ledger(prom: tuple[PrometheusServer, Feed], tmp_path: Path) -> AsyncIterator[Ledger]:
    server, _ = prom
    store = SqliteStateStore(SqliteStateStore.Options(path=str(tmp_path / "s.db")))
    await store.open()
    client = Prometheus(server.url)
    metrics = Metrics(["rag"])
    yield Ledger(
        service="rag",
        store=store,
        metrics=metrics,
        prometheus=client,
        green_after=2.0,
        baseline=BaselineOptions(window=15.0),
    )
    await client.close()
    await store.close()


class Suite:
    """The shape of runtime.caps.verify (rollbackd.verify.suite.VerifySuite)."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.asked: list[list[str]] = []
        self.checks = [SimpleNamespace(name=n, type=n) for n in ("smoke", "counts", "alert_cleared")]

    async def run(self, *, only: list[str]) -> list[CheckResult]:
        self.asked.append(only)
        return [CheckResult(verifier=n, verdict=self.verdict, summary="") for n in only]


def exported(ledger: Ledger) -> str:
    return next(
        line
        for line in ledger.metrics.exposition().decode().splitlines()
        if line.startswith("rollbackd_baseline_latency_p95_seconds{")
    )


async def test_mark_green_measures_and_exports_the_baseline(ledger: Ledger, prom: tuple[Any, Feed]) -> None:
    _, feed = prom
    await ledger.record(
        version="v1",
        image=None,
        digest="sha256:1",
        config_digest=None,
        schema_version="1",
        source="pipeline",
        actor="ci",
        reason="deploy",
    )
    green = await ledger.mark_green("v1", actor="alice", reason="good all day")
    print(f"\nbaseline of v1 from Prometheus: {green.baseline_p95}")
    assert green.baseline_p95 is not None and green.baseline_p95 == pytest.approx(0.375, abs=0.01)
    assert exported(ledger) == f'rollbackd_baseline_latency_p95_seconds{{service="rag"}} {green.baseline_p95}'

    # a bad release goes live and is slow: the refresh never moves the baseline to it
    await ledger.record(
        version="v2",
        image=None,
        digest="sha256:2",
        config_digest=None,
        schema_version="1",
        source="pipeline",
        actor="ci",
        reason="deploy",
    )
    feed.slow, feed.fast = True, 10
    await asyncio.sleep(3)
    assert await ledger.refresh_baseline() is None
    assert exported(ledger).endswith(str(green.baseline_p95))
    history = await ledger.store.release_history("rag")  # type: ignore[attr-defined]
    assert [h["change"] for h in history][:2] == ["deployed", "superseded"]


async def test_auto_green_waits_for_green_after_and_no_firing_alert(
    ledger: Ledger, prom: tuple[PrometheusServer, Feed]
) -> None:
    server, feed = prom
    await ledger.record(
        version="v3",
        image=None,
        digest="sha256:3",
        config_digest=None,
        schema_version="1",
        source="pipeline",
        actor="ci",
        reason="deploy",
    )
    assert await ledger.auto_green() is None  # not live for green_after yet
    server.wait_for('ALERTS{alertname="RAGTestBlock",alertstate="firing",service="rag"}')
    await asyncio.sleep(2.1)
    assert await ledger.auto_green() is None  # a RAG alert of the service fires
    feed.block = 0
    server.wait_for('ALERTS{alertname="RAGTestBlock",alertstate="firing"}', predicate=lambda r: not r)
    await asyncio.sleep(2.5)  # the alert is out of the green_after window now
    suite = Suite(Verdict.FAIL)
    ledger.caps.verify = suite  # type: ignore[assignment]
    assert await ledger.auto_green() is None  # verification exists and fails
    assert suite.asked == [["smoke", "counts"]]  # alert_cleared needs an incident: not asked
    suite.verdict = Verdict.PASS
    deadline = time.monotonic() + 20
    green = None
    while green is None and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        green = await ledger.auto_green()
    assert green is not None and green.green_by == "rollbackd" and "no RAG alert" in (green.green_reason or "")
    assert green.baseline_p95 is not None


def test_baseline_queries_quote_label_values() -> None:
    default = baseline_expr(BaselineOptions(), 'ra"g')
    assert default == (
        "histogram_quantile(0.95, sum by (le) (rate(rag_http_request_duration_seconds_bucket"
        '{service="ra\\"g"}[1800s])))'
    )
    rule = baseline_expr(BaselineOptions(recording_rule="rag:http_request_duration_seconds:p95_5m", window=600), "rag")
    assert rule == 'avg_over_time(rag:http_request_duration_seconds:p95_5m{service="rag"}[600s])'
    custom = baseline_expr(BaselineOptions(expr="my_p95{svc=$service}[$window]"), "rag")
    assert custom == 'my_p95{svc="rag"}[1800s]'
