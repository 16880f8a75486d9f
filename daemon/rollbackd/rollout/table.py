"""The gate table: each phase, each gate's value against its limit, the decision. One text for the
Slack thread and for `rollbackd show` of a rollout, built from what the rollout journaled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MARK = {True: "pass", False: "FAIL", None: "no data"}


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"


def gate_lines(readings: list[Mapping[str, Any]]) -> list[str]:
    return [
        f"  {r['kind']:<4} {r['gate']:<18} {_num(r.get('value')):>10} {r['op']:<2} {_num(r.get('limit')):<10}"
        f" {_MARK[r.get('passed')]}"
        for r in readings
    ]


def evaluation(phase: int, weight: int, ev: Mapping[str, Any]) -> str:
    head = f"phase {phase + 1} ({weight} %): {str(ev.get('decision', '')).upper()} - {ev.get('why', '')}"
    return "\n".join([head, *gate_lines(ev.get("readings") or [])])


def render(rollout: Mapping[str, Any]) -> str:
    """The whole rollout: its version, outcome, then the last evaluation of every phase reached."""
    lines = [
        f"rollout of {rollout.get('version')} (green: {rollout.get('green') or 'none'})"
        f" - {rollout.get('outcome') or 'in progress'}"
    ]
    for key, phase in sorted((rollout.get("phases") or {}).items(), key=lambda kv: int(kv[0])):
        last = phase.get("last")
        if last:
            lines.append(evaluation(int(key), int(phase.get("weight", 0)), last))
        else:
            lines.append(f"phase {int(key) + 1} ({phase.get('weight')} %): started")
    return "\n".join(lines)
