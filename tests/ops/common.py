"""Shared facts and helpers of the operations-artefact tests (rules, configs, dashboards, runbook)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "rules"
RAG_RULES = RULES_DIR / "rag.rules.yml"
ROLLBACKD_RULES = RULES_DIR / "rollbackd.rules.yml"
RULE_FILES = (RAG_RULES, ROLLBACKD_RULES)
RULE_TESTS = tuple(sorted((RULES_DIR / "tests").glob("*.yml")))
RUNBOOK = ROOT / "runbooks" / "RAG_ROLLBACK.md"
RUNBOOK_URL = "https://github.com/rollbackd/rollbackd/blob/main/runbooks/RAG_ROLLBACK.md"
CONFIG_DIR = ROOT / "config"
DASHBOARDS = (ROOT / "dashboards" / "rag-overview.json", ROOT / "dashboards" / "rollbackd.json")

# DESIGN.md, "The 16 RAG alert rules" and "Decision policy".
RAG_ALERTS = (
    "RAGFaithfulnessLow",
    "RAGFaithfulnessCritical",
    "RAGAnswerRelevancyLow",
    "RAGContextRecallLow",
    "RAGGateFailRateHigh",
    "RAGGateFailRateElevated",
    "RAGLatencyP95High",
    "RAGLatencyP99High",
    "RAGLatencyAvgHigh",
    "RAGLatencyP95Regression",
    "RAGProviderLatencyHigh",
    "RAGHTTP5xxRateHigh",
    "RAGServiceDown",
    "RAGRetrievalScoreDrift",
    "RAGCollectionShrunk",
    "RAGGovernanceViolation",
)
AUTO_ROLLBACK_ALERTS = frozenset(
    {"RAGGateFailRateHigh", "RAGHTTP5xxRateHigh", "RAGLatencyP95Regression", "RAGFaithfulnessCritical"}
)
ROLLBACKD_ALERTS = (
    "RollbackdDown",
    "RollbackdRollbackFailed",
    "RollbackdVerificationFailed",
    "RollbackdSnapshotStale",
    "RollbackdBudgetExhausted",
    "RollbackdPausedTooLong",
    "RollbackdHeld",
    "RollbackdWebhookRejected",
    "RollbackdNotifyFailing",
    "RollbackdDrillStale",
)

# The metric contract of rollbackd (rules/README.md): name -> labels.
ROLLBACKD_METRICS: dict[str, tuple[str, ...]] = {
    "rollbackd_build_info": ("version",),
    "rollbackd_webhooks_total": ("result",),
    "rollbackd_alerts_total": ("service", "decision", "reason"),
    "rollbackd_incidents_total": ("service", "outcome"),
    "rollbackd_incident_active": ("service",),
    "rollbackd_step_duration_seconds": ("service", "step"),
    "rollbackd_step_failures_total": ("service", "step"),
    "rollbackd_act_latency_seconds": (),
    "rollbackd_paused": ("service",),
    "rollbackd_held": ("service",),
    "rollbackd_budget_remaining": ("service",),
    "rollbackd_cooldown_remaining_seconds": ("service",),
    "rollbackd_snapshot_last_success_timestamp_seconds": ("service", "store"),
    "rollbackd_verifications_total": ("service", "verifier", "verdict"),
    "rollbackd_baseline_latency_p95_seconds": ("service",),
    "rollbackd_notify_failures_total": ("notifier",),
    "rollbackd_notify_dropped_total": ("priority",),
    "rollbackd_drill_last_success_timestamp_seconds": ("service",),
    "rollbackd_drill_scheduled": ("service",),
}
# The metric contract of the RAG service (DESIGN.md): name -> labels (histograms by base name).
RAG_METRICS: dict[str, tuple[str, ...]] = {
    "rag_http_requests_total": ("route", "code"),
    "rag_http_request_duration_seconds": ("route",),
    "rag_provider_request_duration_seconds": ("provider",),
    "rag_gate_checks_total": ("gate", "result"),
    "rag_ragas_score": ("metric",),
    "rag_ragas_window_queries": (),
    "rag_retrieval_top_score": (),
    "rag_collection_points": ("collection",),
    "rag_governance_violations": ("kind",),
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules_of(path: Path) -> list[dict[str, Any]]:
    """Every rule of a rules file, each with the name of its group under `_group`."""
    return [{**rule, "_group": group["name"]} for group in load_yaml(path)["groups"] for rule in group["rules"]]


def alerts_of(path: Path) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules_of(path) if "alert" in rule}


def recordings_of(path: Path) -> dict[str, dict[str, Any]]:
    return {rule["record"]: rule for rule in rules_of(path) if "record" in rule}


def all_alerts() -> dict[str, dict[str, Any]]:
    return {name: rule for path in RULE_FILES for name, rule in alerts_of(path).items()}


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lowercase, punctuation but - and _ dropped, spaces -> -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def markdown_headings(text: str) -> list[str]:
    """ATX headings (outside fenced code blocks), without the leading #s."""
    headings: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match and not fenced:
            headings.append(match.group(1))
    return headings


def run(cmd: Sequence[str], *, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def poll(fetch: Callable[[], T], predicate: Callable[[T], bool], timeout: float = 60.0) -> T:
    """Call fetch() until predicate(result) holds; the result, or TimeoutError with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if predicate(result):
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout}s; last: {result!r}")
        time.sleep(0.2)
