"""The shipped Prometheus rules: valid, unit-tested by promtool, and true to DESIGN.md."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.ops.common import (
    AUTO_ROLLBACK_ALERTS,
    DASHBOARDS,
    RAG_ALERTS,
    RAG_METRICS,
    RAG_RULES,
    ROLLBACKD_ALERTS,
    ROLLBACKD_METRICS,
    ROLLBACKD_RULES,
    RULE_FILES,
    RULE_TESTS,
    RULES_DIR,
    RUNBOOK_URL,
    alerts_of,
    all_alerts,
    load_yaml,
    recordings_of,
    rules_of,
    run,
)
from tests.support.rules_transform import parse_duration

# DESIGN.md's table: alert -> (severity, for). Severities DESIGN leaves open are warnings, except
# RAGCollectionShrunk (critical: possible data loss) and RAGServiceDown.
EXPECTED = {
    "RAGFaithfulnessLow": ("warning", "15m"),
    "RAGFaithfulnessCritical": ("critical", "5m"),
    "RAGAnswerRelevancyLow": ("warning", "15m"),
    "RAGContextRecallLow": ("warning", "15m"),
    "RAGGateFailRateHigh": ("critical", "3m"),
    "RAGGateFailRateElevated": ("warning", "10m"),
    "RAGLatencyP95High": ("warning", "5m"),
    "RAGLatencyP99High": ("warning", "5m"),
    "RAGLatencyAvgHigh": ("warning", "10m"),
    "RAGLatencyP95Regression": ("critical", "5m"),
    "RAGProviderLatencyHigh": ("warning", "10m"),
    "RAGHTTP5xxRateHigh": ("critical", "5m"),
    "RAGServiceDown": ("critical", "2m"),
    "RAGRetrievalScoreDrift": ("warning", "30m"),
    "RAGCollectionShrunk": ("critical", "5m"),
    "RAGGovernanceViolation": ("warning", "1h"),
    "RollbackdDown": ("critical", "2m"),
    "RollbackdPausedTooLong": ("warning", "4h"),
    "RollbackdHeld": ("critical", "30m"),
}
# Alerts whose value is a constant state (1), not a measurement: their text names the state instead.
VALUE_IS_A_STATE = {"RollbackdDown", "RollbackdPausedTooLong", "RollbackdHeld"}
AGGREGATION = re.compile(r"\b(sum|min|max|avg|count|stddev|stdvar|group)\s*(by\s*\(([^)]*)\))?\s*\(")


def test_promtool_check_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no promtool tests in rules/tests/"
    result = run([promtool, "test", "rules", *map(str, RULE_TESTS)], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_the_16_rag_alerts_and_rollbackds_own() -> None:
    assert list(alerts_of(RAG_RULES)) == list(RAG_ALERTS)
    assert list(alerts_of(ROLLBACKD_RULES)) == list(ROLLBACKD_ALERTS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_severity_and_for_follow_design(name: str) -> None:
    rule = all_alerts()[name]
    assert (rule["labels"]["severity"], rule.get("for")) == EXPECTED[name]


def test_rag_groups() -> None:
    groups = [group["name"] for group in load_yaml(RAG_RULES)["groups"]]
    assert groups == ["rag-quality", "rag-gates", "rag-latency", "rag-errors", "rag-retrieval-data", "rag-governance"]


@pytest.mark.parametrize("name", [*RAG_ALERTS, *ROLLBACKD_ALERTS])
def test_labels_and_annotations(name: str) -> None:
    rule = all_alerts()[name]
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["labels"]["team"] == ("rag" if name.startswith("RAG") else "rollbackd")
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}"
    text = annotations["summary"] + annotations["description"]
    if name not in VALUE_IS_A_STATE:
        assert "$value" in text, f"{name}: summary/description must carry the value"
    if "service" in str(rule["expr"]):
        assert "$labels.service" in text, f"{name}: the text must name the service"


def test_auto_rollback_alerts_say_so_and_others_do_not() -> None:
    for name in RAG_ALERTS:
        summary = all_alerts()[name]["annotations"]["summary"]
        assert ("automatic rollback" in summary) == (name in AUTO_ROLLBACK_ALERTS), name


@pytest.mark.parametrize("rule", rules_of(RAG_RULES), ids=lambda r: r.get("alert") or r["record"])
def test_every_rag_aggregation_keeps_the_service_label(rule: dict[str, Any]) -> None:
    expr = str(rule["expr"])
    aggregations = AGGREGATION.findall(expr)
    if not aggregations:  # reads a recorded series, which is by service
        assert re.search(r"\brag:[a-z0-9_]+:[a-z0-9_]+", expr), expr
    for _op, _by, labels in aggregations:
        assert "service" in [label.strip() for label in labels.split(",")], f"aggregation without service: {expr}"


def test_recording_rule_names() -> None:
    assert set(recordings_of(RAG_RULES)) == {
        "rag:gate_checks:rate3m",
        "rag:gate_checks_fail:rate3m",
        "rag:gate_checks_fail:ratio_rate3m",
        "rag:http_request_duration_seconds:p95_5m",
        "rag:http_request_duration_seconds:p99_5m",
        "rag:http_request_duration_seconds:avg_5m",
        "rag:provider_request_duration_seconds:p95_5m",
        "rag:http_requests:rate5m",
        "rag:http_5xx:rate5m",
        "rag:http_5xx:ratio_rate5m",
        "rag:retrieval_top_score:median_1h",
    }


def test_recordings_come_before_the_alerts_of_their_group() -> None:
    """An alert reads the same evaluation's recorded value only if the recording runs first."""
    for group in load_yaml(RAG_RULES)["groups"]:
        seen: set[str] = set()
        for rule in group["rules"]:
            if "record" in rule:
                seen.add(rule["record"])
                continue
            for used in re.findall(r"\brag:[a-z0-9_]+:[a-z0-9_]+", str(rule["expr"])):
                assert used in seen, f"{rule['alert']} reads {used} before (or outside) its group"


def test_regression_compares_with_rollbackds_baseline() -> None:
    expr = all_alerts()["RAGLatencyP95Regression"]["expr"]
    assert "rollbackd_baseline_latency_p95_seconds" in expr
    assert re.search(r">\s*on\s*\(service\)\s*3\s*\*", expr), expr


# ---------------------------------------------------------------- the unit tests cover every rule


def _unit_cases() -> list[tuple[str, dict[str, Any]]]:
    """(test file name, test group) for every test group of every promtool test file."""
    return [(path.name, group) for path in RULE_TESTS for group in load_yaml(path)["tests"]]


def test_every_alert_fires_and_stays_silent_in_unit_tests() -> None:
    firing: dict[str, list[dict[str, Any]]] = {}
    silent: set[str] = set()
    for _file, group in _unit_cases():
        for case in group.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                firing.setdefault(case["alertname"], []).extend(case["exp_alerts"])
            else:
                silent.add(case["alertname"])
    names = set(RAG_ALERTS) | set(ROLLBACKD_ALERTS)
    assert names - set(firing) == set(), "alerts never seen firing"
    assert names - silent == set(), "alerts never seen silent"
    for name, expected in firing.items():
        assert any(e.get("exp_annotations", {}).get("runbook_url") for e in expected), name
        if name.startswith("RAG"):
            assert all(e["exp_labels"]["service"] for e in expected), f"{name} fires without a service label"


def test_every_for_is_tested_on_both_sides() -> None:
    """For each alert with `for`, some test group sees it silent at t and firing at t + 1 evaluation,
    or later: the silent case before `for` ends, the firing case once it has passed."""
    proven: set[str] = set()
    for _file, group in _unit_cases():
        cases = group.get("alert_rule_test", [])
        for name in {c["alertname"] for c in cases}:
            times_silent = [
                parse_duration(c["eval_time"]) for c in cases if c["alertname"] == name and not c.get("exp_alerts")
            ]
            times_firing = [
                parse_duration(c["eval_time"]) for c in cases if c["alertname"] == name and c.get("exp_alerts")
            ]
            if times_silent and times_firing and min(times_silent) < min(times_firing):
                proven.add(name)
    with_for = {name for name, rule in all_alerts().items() if rule.get("for")}
    assert with_for - proven == set()


def test_every_recording_rule_has_an_exact_unit_test() -> None:
    tested = {
        case["expr"]
        for _file, group in _unit_cases()
        for case in group.get("promql_expr_test", [])
        if case.get("exp_samples")
    }
    assert set(recordings_of(RAG_RULES)) - tested == set()


def test_unit_test_inputs_carry_service_and_job() -> None:
    for file, group in _unit_cases():
        for series in group["input_series"]:
            text = series["series"]
            if text.startswith("rag_") or 'job="rag"' in text:
                assert 'service="' in text and 'job="rag"' in text, f"{file}: {text}"


# ------------------------------------------------------------------------- the metric contracts


def _metric_names(text: str, prefix: str) -> set[str]:
    names = set(re.findall(rf"\b{prefix}_[a-z0-9_]*[a-z0-9]", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if not n.endswith("_total") else n for n in names}


def _all_queries() -> str:
    exprs = [str(rule["expr"]) for path in RULE_FILES for rule in rules_of(path)]
    exprs += [
        str(annotation)
        for rule in all_alerts().values()
        for annotation in rule["annotations"].values()
        if "query" in str(annotation)
    ]
    dashboards = [json.loads(path.read_text()) for path in DASHBOARDS]
    exprs += [t["expr"] for d in dashboards for p in d["panels"] for t in p["targets"]]
    exprs += [a["expr"] for d in dashboards for a in d["annotations"]["list"] if "expr" in a]
    return "\n".join(exprs)


def test_rules_and_dashboards_use_only_contract_metrics() -> None:
    text = _all_queries()
    assert _metric_names(text, "rollbackd") <= set(ROLLBACKD_METRICS)
    assert _metric_names(text, "rag") <= set(RAG_METRICS)


def test_readme_documents_both_contracts() -> None:
    readme = (RULES_DIR / "README.md").read_text()
    for name in (*ROLLBACKD_METRICS, *RAG_METRICS):
        assert f"| `{name}` |" in readme, name
    for name in (*RAG_ALERTS, *ROLLBACKD_ALERTS):
        assert f"| {name} |" in readme, name
