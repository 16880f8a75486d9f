"""Evidence that Prometheus looked at the service, for `alert_cleared`: an alert that is not firing
proves nothing when its rule had no data to evaluate (the service down, its scrape failing, the rule
broken). Each function answers None when the evidence is there, else one sentence saying what is
missing; Prometheus errors propagate as BackendError (the caller's ERROR).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from rollbackd.prom import promql_string

_FRACTION = re.compile(r"(\.\d{6})\d+")


def render(expr: str, label: str, service: str) -> str:
    """``up{selector} == 1`` -> ``up{service="rag"} == 1`` (the value is data, escaped)."""
    return expr.replace("{selector}", "{" + f"{label}={promql_string(service)}" + "}")


async def stale_series(prom: Any, exprs: Sequence[str], max_age: float) -> str | None:
    """Every expression must return a sample no older than ``max_age`` seconds."""
    for expr in exprs:
        result = await prom.query(f"time() - max(timestamp({expr}))")
        if not result:
            return f"no sample of the service: {expr} returns nothing"
        age = float(result[0]["value"][1])
        if age > max_age:
            return f"no fresh sample of the service: {expr} last seen {age:.0f}s ago (max_sample_age {max_age:g}s)"
    return None


def parse_time(value: Any) -> float | None:
    """Prometheus's RFC 3339 times carry nanoseconds; Python reads microseconds."""
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    try:
        return dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def rule_not_evaluated(prom: Any, alertname: str, since: float) -> str | None:
    """The alert's rule is loaded, healthy, and was evaluated at or after ``since`` (a wall-clock time):
    only then does the ALERTS series asked next say anything about the service as it is now."""
    rules = await prom.alert_rules(alertname)
    if not rules:
        return f"no alerting rule {alertname} is loaded in Prometheus"
    for rule in rules:
        if rule.get("health") != "ok":
            return f"rule {alertname} is unhealthy ({rule.get('health')}: {rule.get('lastError') or '-'})"
        evaluated = parse_time(rule.get("lastEvaluation"))
        if evaluated is None or evaluated < since:
            return f"rule {alertname} has not been evaluated since the check started"
    return None
