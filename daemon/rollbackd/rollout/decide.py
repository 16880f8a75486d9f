"""The decision matrix, pure: gate readings and the phase's state in, a decision and the next state
out. No I/O and no clock: the runner passes ``now``, so the table tests need no waiting.

    any hard gate failing                 -> ROLLBACK (even over a human's promote or hold)
    a human's hold                        -> HOLD
    a human's promote                     -> PROMOTE
    a soft gate failing                   -> HOLD (the hard window keeps counting)
    every hard gate passing for the window -> PROMOTE
    otherwise                             -> WAIT

A gate without a value (no series: no traffic yet) or without a limit (no baseline) is no evidence:
a hard gate without evidence restarts the window (no PASS without evidence), a soft one does not hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from rollbackd.reasons import RolloutDecision
from rollbackd.rollout.config import Comparison, Gate

_COMPARE = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}


@dataclass(frozen=True, slots=True)
class Reading:
    """One gate's value against its limit at one evaluation."""

    gate: str
    kind: Literal["hard", "soft"]
    op: Comparison
    value: float | None
    limit: float | None

    @property
    def passed(self) -> bool | None:
        """None when there is no evidence (no value, or no limit to compare it with)."""
        if self.value is None or self.limit is None or not math.isfinite(self.value):
            return None
        return bool(_COMPARE[self.op](float(self.value), float(self.limit)))

    def to_json(self) -> dict[str, object]:
        return {
            "gate": self.gate,
            "kind": self.kind,
            "op": self.op,
            "value": self.value,
            "limit": self.limit,
            "passed": self.passed,
        }


def limit_of(gate: Gate, baseline_p95: float | None) -> float | None:
    if gate.threshold is not None:
        return gate.threshold
    if baseline_p95 is None or gate.max_ratio is None:
        return None
    return baseline_p95 * gate.max_ratio


def reading(gate: Gate, kind: Literal["hard", "soft"], value: float | None, baseline_p95: float | None) -> Reading:
    return Reading(gate=gate.name, kind=kind, op=gate.op, value=value, limit=limit_of(gate, baseline_p95))


@dataclass(frozen=True, slots=True)
class PhaseState:
    """What the matrix remembers of a phase between evaluations (journaled in the rollout's context)."""

    started_at: float
    clean_since: float  # every hard gate has passed with evidence since then
    held_by: str | None = None  # a human's hold, until resume
    promote_by: str | None = None  # a human's promote: skip the rest of the window

    @classmethod
    def start(cls, now: float) -> PhaseState:
        return cls(started_at=now, clean_since=now)


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: RolloutDecision
    why: str
    state: PhaseState


def decide(readings: list[Reading], state: PhaseState, now: float, window: float) -> Verdict:
    hard = [r for r in readings if r.kind == "hard"]
    failing = [r.gate for r in hard if r.passed is False]
    if failing:
        return Verdict(RolloutDecision.ROLLBACK, "hard gate failing: " + ", ".join(failing), state)
    unproven = [r.gate for r in hard if r.passed is None]
    if unproven:
        state = replace(state, clean_since=now)
    if state.held_by:
        return Verdict(RolloutDecision.HOLD, f"held by {state.held_by}", state)
    if state.promote_by:
        return Verdict(RolloutDecision.PROMOTE, f"promoted by {state.promote_by}", state)
    soft = [r.gate for r in readings if r.kind == "soft" and r.passed is False]
    if soft:
        return Verdict(RolloutDecision.HOLD, "soft gate failing: " + ", ".join(soft), state)
    if unproven:
        return Verdict(RolloutDecision.WAIT, "no evidence yet: " + ", ".join(unproven), state)
    clean_for = now - state.clean_since
    if clean_for >= window:
        return Verdict(RolloutDecision.PROMOTE, f"every hard gate passed for {clean_for:.0f}s", state)
    return Verdict(RolloutDecision.WAIT, f"hard gates clean for {clean_for:.0f}s of {window:.0f}s", state)
