"""The latency baseline of a green release: its P95 from Prometheus, over a window, stored on the
release and exported as ``rollbackd_baseline_latency_p95_seconds{service}`` (what
RAGLatencyP95Regression compares against). Label values go into PromQL only as escaped strings."""

from __future__ import annotations

import math
from typing import Any

from rollbackd.deploy import BaselineOptions
from rollbackd.prom import Prometheus, promql_string, selector

DEFAULT_EXPR = "histogram_quantile(0.95, sum by (le) (rate({bucket}[$window])))"
BUCKET = "rag_http_request_duration_seconds_bucket"


def window_text(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def baseline_expr(options: BaselineOptions, service: str) -> str:
    """The PromQL that measures the P95: ``expr`` (``$service``, ``$window``), else the average of a
    recording rule over the window, else the quantile of the RAG latency histogram."""
    window = window_text(options.window)
    if options.expr:
        return options.expr.replace("$service", promql_string(service)).replace("$window", window)
    if options.recording_rule:
        return f"avg_over_time({selector(options.recording_rule, {options.label: service})}[{window}])"
    return DEFAULT_EXPR.replace("{bucket}", selector(BUCKET, {options.label: service})).replace("$window", window)


async def measure(prom: Prometheus, options: BaselineOptions, service: str) -> float | None:
    """The P95 in seconds, or None when Prometheus has no data (no traffic yet: never a zero)."""
    value = await prom.scalar(baseline_expr(options, service))
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return value


def verification_passed(result: Any) -> bool:
    """A verification result (bool, dict, CheckResult, or a list of them) as pass or not."""
    if isinstance(result, bool):
        return result
    if isinstance(result, list | tuple):
        counted = [r for r in result if not getattr(r, "dry_run", False)]
        return all(verification_passed(r) for r in counted)
    if isinstance(result, dict):
        verdict = result.get("verdict", result.get("ok", result.get("passed")))
    else:
        verdict = getattr(result, "verdict", getattr(result, "ok", getattr(result, "passed", None)))
    return verdict is True or str(getattr(verdict, "value", verdict)).lower() == "pass"
