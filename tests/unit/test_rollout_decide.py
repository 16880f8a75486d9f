"""The decision matrix, as a table: gate readings and a phase's state in, the decision out."""

from __future__ import annotations

import math

import pytest

from rollbackd.reasons import RolloutDecision as D
from rollbackd.rollout.config import Gate
from rollbackd.rollout.decide import PhaseState, Reading, decide, limit_of, reading

WINDOW = 300.0


def hard(value: float | None, limit: float | None = 0.02, op: str = "<=") -> Reading:
    return Reading("error_rate", "hard", op, value, limit)  # type: ignore[arg-type]


def soft(value: float | None, limit: float | None = 1.1) -> Reading:
    return Reading("latency_p95", "soft", "<=", value, limit)


S0 = PhaseState.start(1000.0)


@pytest.mark.parametrize(
    ("readings", "state", "now", "decision"),
    [
        # all hard pass, window not over -> WAIT; over -> PROMOTE
        ([hard(0.0), soft(1.0)], S0, 1100.0, D.WAIT),
        ([hard(0.0), soft(1.0)], S0, 1300.0, D.PROMOTE),
        # a hard gate failing -> ROLLBACK, whatever else holds
        ([hard(0.5), soft(1.0)], S0, 1300.0, D.ROLLBACK),
        ([hard(0.5)], PhaseState(1000.0, 1000.0, held_by="ann"), 1010.0, D.ROLLBACK),
        ([hard(0.5)], PhaseState(1000.0, 1000.0, promote_by="ann"), 1010.0, D.ROLLBACK),
        # a soft gate failing -> HOLD even when the window is over
        ([hard(0.0), soft(2.0)], S0, 1300.0, D.HOLD),
        ([hard(0.0), soft(2.0)], S0, 1010.0, D.HOLD),
        # a human's hold and promote
        ([hard(0.0)], PhaseState(1000.0, 1000.0, held_by="ann"), 1300.0, D.HOLD),
        ([hard(0.0), soft(2.0)], PhaseState(1000.0, 1000.0, promote_by="ann"), 1010.0, D.PROMOTE),
        # no evidence: a hard gate without value is no pass; a soft gate without baseline does not hold
        ([hard(None)], S0, 1300.0, D.WAIT),
        ([hard(math.nan)], S0, 1300.0, D.WAIT),
        ([hard(0.0), soft(5.0, limit=None)], S0, 1300.0, D.PROMOTE),
        # comparison direction: success rate must stay above a floor
        ([hard(0.999, limit=0.99, op=">=")], S0, 1300.0, D.PROMOTE),
        ([hard(0.95, limit=0.99, op=">=")], S0, 1300.0, D.ROLLBACK),
        ([hard(0.02, limit=0.02, op="<")], S0, 1010.0, D.ROLLBACK),
    ],
)
def test_decision_matrix(readings: list[Reading], state: PhaseState, now: float, decision: D) -> None:
    assert decide(readings, state, now, WINDOW).decision is decision


def test_a_hard_gate_without_evidence_restarts_the_window() -> None:
    verdict = decide([hard(None)], S0, 1200.0, WINDOW)
    assert verdict.state.clean_since == 1200.0
    assert decide([hard(0.0)], verdict.state, 1400.0, WINDOW).decision is D.WAIT
    assert decide([hard(0.0)], verdict.state, 1500.0, WINDOW).decision is D.PROMOTE


def test_a_soft_hold_clears_and_promotes_without_restarting_the_hard_window() -> None:
    held = decide([hard(0.0), soft(2.0)], S0, 1300.0, WINDOW)
    assert held.decision is D.HOLD and held.state.clean_since == 1000.0
    assert decide([hard(0.0), soft(1.0)], held.state, 1330.0, WINDOW).decision is D.PROMOTE


def test_relative_gate_limit_is_the_green_baseline_times_the_ratio() -> None:
    gate = Gate(name="latency_p95", expr="x", relative_to="baseline_p95", max_ratio=1.1)
    assert limit_of(gate, 0.5) == pytest.approx(0.55)
    assert limit_of(gate, None) is None
    assert reading(gate, "soft", 0.6, 0.5).passed is False
    assert reading(gate, "soft", 0.5, 0.5).passed is True
    assert reading(Gate(name="e", expr="x", threshold=0.1), "hard", 0.2, None).passed is False
