"""dashboards/*.json: valid Grafana dashboard models whose every query runs on a real Prometheus.

The Prometheus is fed by two exporters that serve every metric of both contracts (the RAG service's
and rollbackd's, histograms with their buckets); the shipped rules are loaded, so panels that read
recorded series (rag:...) are checked too. Each panel query runs with Grafana's variables replaced.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ops.common import DASHBOARDS, RAG_METRICS, ROLLBACKD_METRICS, RULE_FILES
from tests.support.prometheus import MetricsExporter, PrometheusError, PrometheusServer, ScrapeTarget

DS_UID = "${datasource}"
# What Grafana would put in; the data below spans a few seconds, so ranges of 1m or more hold it all.
VARIABLES = {
    "${service}": "rag",
    "$service": "rag",
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$__range_s": "300",
}
# Queries that are legitimately empty on data only seconds old, by legend.
EMPTY_ON_FRESH_DATA = {
    "drift line: 80 % of median a day earlier": "offset 1d: no data a day old",
    "{{collection}} vs 1h ago": "offset 1h: no data an hour old",
}
RAG_OVERVIEW_TOPICS = (
    "RAGAS",
    "Gate fail rate",
    "Retrieval",
    "internal against LLM provider",
    "per route",
    "Governance",
    "Collection",
    "Error",
    "Rollback events",
)


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def _targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']}", annotation


def _substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unknown variable in {expr!r}"
    return expr


# ------------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = _load(path)
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard["id"] is None  # importable anywhere
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_UID}, title
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), title
        assert grid["x"] + grid["w"] <= 24, title
        own = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not own & cells, f"{title} overlaps another panel"
        cells |= own
        assert panel["targets"], f"{title} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), title
        for target in panel["targets"]:
            assert target["expr"].strip(), title
            assert target["datasource"]["uid"] == DS_UID, title


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_variables(path: Path) -> None:
    variables = {v["name"]: v for v in _load(path)["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    service = variables["service"]
    assert service["type"] == "query"
    assert service["datasource"]["uid"] == DS_UID
    query = service["query"]["query"] if isinstance(service["query"], dict) else service["query"]
    assert re.fullmatch(r"label_values\(.+, service\)", query), query


def test_dashboard_uids_differ() -> None:
    assert len({_load(p)["uid"] for p in DASHBOARDS}) == len(DASHBOARDS)


def test_rag_overview_has_the_nine_panels() -> None:
    titles = [p["title"] for p in _load(DASHBOARDS[0])["panels"]]
    assert len(titles) == len(RAG_OVERVIEW_TOPICS)
    for topic, title in zip(RAG_OVERVIEW_TOPICS, titles, strict=True):
        assert topic.lower() in title.lower(), (topic, title)


@pytest.mark.parametrize(
    ("path", "metrics"), [(DASHBOARDS[0], RAG_METRICS), (DASHBOARDS[1], ROLLBACKD_METRICS)], ids=["rag", "rollbackd"]
)
def test_every_contract_metric_is_on_its_dashboard(path: Path, metrics: dict[str, tuple[str, ...]]) -> None:
    exprs = "\n".join(t["expr"] for _, t in _targets(_load(path)))
    for name in metrics:
        assert name in exprs, f"{name} is on no panel of {path.name}"


# ------------------------------------------------------------------------------------------ real data


def _histogram(name: str, labels: str, n: int, bounds: tuple[float, ...]) -> list[str]:
    """A histogram whose observations spread evenly over its buckets, growing with the scrape count."""
    sep = "," if labels else ""
    lines = []
    for i, bound in enumerate(bounds, 1):
        lines.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {n * 10 * i}')
    lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {n * 10 * (len(bounds) + 1)}')
    lines.append(f"{name}_sum{{{labels}}} {n * 7.5}")
    lines.append(f"{name}_count{{{labels}}} {n * 10 * (len(bounds) + 1)}")
    return lines


def rag_exposition(n: int) -> str:
    """Every metric of the RAG service's contract; counters grow with n (the scrape count)."""
    lines = [
        f'rag_http_requests_total{{route="/v1/query",code="200"}} {n * 97}',
        f'rag_http_requests_total{{route="/v1/query",code="503"}} {n * 2}',
        f'rag_http_requests_total{{route="/v1/query",code="404"}} {n}',
        f'rag_gate_checks_total{{gate="grounded",result="pass"}} {n * 91}',
        f'rag_gate_checks_total{{gate="grounded",result="fail"}} {n * 9}',
        'rag_ragas_score{metric="faithfulness"} 0.82',
        'rag_ragas_score{metric="answer_relevancy"} 0.9',
        'rag_ragas_score{metric="context_recall"} 0.75',
        "rag_ragas_window_queries 120",
        'rag_collection_points{collection="docs"} 10000',
        'rag_governance_violations{kind="missing_owner"} 1',
        'rag_governance_violations{kind="review_overdue"} 0',
    ]
    lines += _histogram("rag_http_request_duration_seconds", 'route="/v1/query"', n, (0.25, 0.5, 1, 2.5, 5))
    lines += _histogram("rag_provider_request_duration_seconds", 'provider="openai"', n, (0.25, 0.5, 1, 2.5, 5))
    lines += _histogram("rag_retrieval_top_score", "", n, (0.5, 0.6, 0.7, 0.8, 0.9))
    return "\n".join(lines) + "\n"


def rollbackd_exposition(n: int) -> str:
    """Every metric of rollbackd's contract (rules/README.md)."""
    now = time.time()
    lines = [
        'rollbackd_build_info{version="0.1.0"} 1',
        f'rollbackd_webhooks_total{{result="accepted"}} {n}',
        'rollbackd_webhooks_total{result="unauthorized"} 0',
        f'rollbackd_alerts_total{{service="rag",decision="rollback",reason="policy"}} {n}',
        'rollbackd_alerts_total{service="rag",decision="suppressed",reason="cooldown"} 0',
        f'rollbackd_incidents_total{{service="rag",outcome="resolved"}} {n}',
        'rollbackd_incidents_total{service="rag",outcome="failed"} 0',
        'rollbackd_incident_active{service="rag"} 1',
        'rollbackd_step_failures_total{service="rag",step="data.prepare"} 0',
        'rollbackd_paused{service="rag"} 0',
        'rollbackd_paused{service="*"} 0',
        'rollbackd_held{service="rag"} 0',
        'rollbackd_budget_remaining{service="rag"} 1',
        'rollbackd_cooldown_remaining_seconds{service="rag"} 600',
        f'rollbackd_snapshot_last_success_timestamp_seconds{{service="rag",store="postgres"}} {now - 3600}',
        f'rollbackd_snapshot_last_success_timestamp_seconds{{service="rag",store="qdrant"}} {now - 3600}',
        f'rollbackd_verifications_total{{service="rag",verifier="smoke",verdict="pass"}} {n}',
        'rollbackd_verifications_total{service="rag",verifier="ragas_quick",verdict="inconclusive"} 0',
        'rollbackd_baseline_latency_p95_seconds{service="rag"} 0.8',
        'rollbackd_notify_failures_total{notifier="slack"} 0',
        'rollbackd_notify_dropped_total{priority="other"} 0',
        f'rollbackd_drill_last_success_timestamp_seconds{{service="rag"}} {now - 86400}',
        'rollbackd_drill_scheduled{service="rag"} 1',
    ]
    lines += _histogram("rollbackd_step_duration_seconds", 'service="rag",step="data.prepare"', n, (1, 5, 30, 120))
    lines += _histogram("rollbackd_act_latency_seconds", "", n, (0.1, 0.5, 1, 5))
    return "\n".join(lines) + "\n"


class _Counter:
    """Renders an exposition for the n-th scrape: counters grow by a fixed step per scrape."""

    def __init__(self, render: Callable[[int], str]) -> None:
        self.n = 0
        self._render = render

    def __call__(self) -> str:
        self.n += 1
        return self._render(self.n)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with (
        MetricsExporter() as rag,
        MetricsExporter() as rollbackd,
    ):
        rag.set_render(_Counter(rag_exposition))
        rollbackd.set_render(_Counter(rollbackd_exposition))
        targets = [
            ScrapeTarget("rag", rag.address, labels={"service": "rag"}),
            ScrapeTarget("rollbackd", rollbackd.address),
        ]
        with PrometheusServer(targets=targets, rule_files=RULE_FILES) as prom:
            # Enough samples for rate() over 1m, and the recording rules evaluated on them.
            prom.wait_for('count_over_time(rag_http_requests_total{service="rag",code="200"}[1m]) >= 3')
            prom.wait_for('count_over_time(rollbackd_webhooks_total{result="accepted"}[1m]) >= 3')
            prom.wait_for('rag:gate_checks_fail:ratio_rate3m{service="rag"} > 0')
            prom.wait_for('rag:retrieval_top_score:median_1h{service="rag"} > 0')
            yield prom


@pytest.mark.integration
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_runs(prometheus: PrometheusServer, path: Path) -> None:
    errors: list[str] = []
    empty: list[str] = []
    for title, target in _targets(_load(path)):
        expr = _substitute(target["expr"])
        try:
            result = prometheus.query(expr)
        except PrometheusError as exc:
            errors.append(f"{title} [{target.get('refId')}]: {exc}")
            continue
        if not result and target.get("legendFormat") not in EMPTY_ON_FRESH_DATA:
            empty.append(f"{title} [{target.get('refId')}]: {expr}")
    assert errors == [], "queries that Prometheus rejects:\n" + "\n".join(errors)
    assert empty == [], "queries empty although every contract metric is served:\n" + "\n".join(empty)


@pytest.mark.integration
def test_values_make_sense(prometheus: PrometheusServer) -> None:
    """A few panels' numbers, from the exporter's fixed proportions: 9 % gate failures, 2 % 503s."""
    gate = prometheus.query(_substitute('rag:gate_checks_fail:ratio_rate3m{service="$service"}'))
    assert gate and abs(float(gate[0]["value"][1]) - 0.09) < 1e-9
    errors = prometheus.query(_substitute('rag:http_5xx:ratio_rate5m{service="$service"}'))
    assert errors and abs(float(errors[0]["value"][1]) - 0.02) < 1e-9
    paused = prometheus.query(_substitute('max by (service) (rollbackd_paused{service=~"$service|[*]"})'))
    assert {r["metric"]["service"] for r in paused} == {"rag", "*"}


@pytest.mark.integration
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_service_variable_finds_the_service(prometheus: PrometheusServer, path: Path) -> None:
    variables = {v["name"]: v for v in _load(path)["templating"]["list"]}
    query = variables["service"]["definition"]
    match = re.fullmatch(r"label_values\((.+), service\)", query)
    assert match, query
    body = prometheus.api("label/service/values", {"match[]": match.group(1)})
    assert body["status"] == "success" and "rag" in body["data"], body
