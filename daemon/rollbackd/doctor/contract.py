"""What the shipped rules and metric contract promise (rules/README.md), as the doctor expects it.
tests/ops checks these names against rules/*.rules.yml, so the two cannot drift apart."""

from __future__ import annotations

from typing import Final

RAG_METRIC_PREFIX: Final = "rag_"  # every series of the RAG service's metric contract
ROLLBACKD_JOB: Final = "rollbackd"  # RollbackdDown queries up{job="rollbackd"}
BASELINE_METRIC: Final = "rollbackd_baseline_latency_p95_seconds"
BASELINE_ALERT: Final = "RAGLatencyP95Regression"
SNAPSHOT_METRIC: Final = "rollbackd_snapshot_last_success_timestamp_seconds"
DRILL_METRIC: Final = "rollbackd_drill_last_success_timestamp_seconds"
SNAPSHOT_STALE_S: Final = 26 * 3600.0  # RollbackdSnapshotStale
DRILL_STALE_S: Final = 8 * 86400.0  # RollbackdDrillStale
TEST_ALERTNAME: Final = "RollbackdDoctorTest"

RAG_ALERTS: Final = (
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
ROLLBACKD_ALERTS: Final = (
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
