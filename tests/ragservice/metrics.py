"""The metric contract of DESIGN.md, on a registry of the service's own."""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

GATE = "grounding"  # one gate check per answered query: fail share == share of queries failing the gate
RAGAS_METRICS = ("faithfulness", "answer_relevancy", "context_recall")
GOVERNANCE_KINDS = ("missing_owner", "review_overdue")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class Metrics:
    def __init__(self, *, version: str, mode: str, ragas_window: int = 100) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "rag_http_requests", "HTTP requests by route and status code", ["route", "code"], registry=r
        )
        self.http_duration = Histogram(
            "rag_http_request_duration_seconds",
            "End-to-end request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_duration = Histogram(
            "rag_provider_request_duration_seconds",
            "LLM provider call latency",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gate_checks = Counter(
            "rag_gate_checks", "Quality gate checks by gate and result", ["gate", "result"], registry=r
        )
        self.ragas_score = Gauge(
            "rag_ragas_score", "Rolling lexical quality score over the last queries", ["metric"], registry=r
        )
        self.ragas_window_queries = Gauge(
            "rag_ragas_window_queries", "Queries in the rolling quality window", registry=r
        )
        self.retrieval_top_score = Histogram(
            "rag_retrieval_top_score", "Top-1 retrieval similarity per query", buckets=SCORE_BUCKETS, registry=r
        )
        self.collection_points = Gauge(
            "rag_collection_points",
            "Points in the Qdrant collection (alias) the service reads",
            ["collection"],
            registry=r,
        )
        self.governance_violations = Gauge(
            "rag_governance_violations", "Governance violations of the sources file", ["kind"], registry=r
        )
        self.info = Gauge("rag_build_info", "Version and mode of the running service", ["version", "mode"], registry=r)
        self.info.labels(version, mode).set(1)
        for result in ("pass", "fail"):
            self.gate_checks.labels(GATE, result)
        for kind in GOVERNANCE_KINDS:
            self.governance_violations.labels(kind).set(0)
        self._window: deque[dict[str, float]] = deque(maxlen=ragas_window)

    def observe_quality(self, scores: dict[str, float]) -> None:
        """Add one query's scores to the rolling window and publish the window means."""
        self._window.append(scores)
        n = len(self._window)
        self.ragas_window_queries.set(n)
        for metric in RAGAS_METRICS:
            self.ragas_score.labels(metric).set(sum(s[metric] for s in self._window) / n)
