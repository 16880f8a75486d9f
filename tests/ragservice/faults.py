"""Injected faults, applied deterministically.

A fraction f is applied with an exact error-diffusion accumulator: after n events exactly floor(n * f) have
been hit, spread evenly (f = 0.09 hits events 12, 23, 34, ... 100). A 9 % fault against a 7 % alert threshold
therefore never flaps, whatever window the rule uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any


class Diffuser:
    """Exact error diffusion: `hit()` is true for exactly floor(n * fraction) of the first n calls."""

    def __init__(self, fraction: float | str = 0) -> None:
        self.fraction = Fraction(str(fraction)).limit_denominator(1_000_000)
        if not 0 <= self.fraction <= 1:
            raise ValueError("fraction must be within [0, 1]")
        self._acc = Fraction(0)

    def hit(self) -> bool:
        if not self.fraction:
            return False
        self._acc += self.fraction
        if self._acc >= 1:
            self._acc -= 1
            return True
        return False


_KINDS = ("missing_owner", "review_overdue")
# good/bad: a release as it is; the others game a lexical scorer (tests of what it notices):
# canned (one fixed text), echo (the question back), dump (every context, the same pile for every
# question), negate (the good answer, negated), wrong_number (the good answer, every number off by one),
# foreign (the good answer's facts in another language's words).
ANSWER_MODES = (None, "good", "bad", "canned", "echo", "dump", "negate", "wrong_number", "foreign")


@dataclass
class Fault:
    gate_fail_fraction: float = 0.0
    error_fraction: float = 0.0
    latency_s: float = 0.0
    answer_mode: str | None = None  # None: the service's RAG_MODE
    governance: dict[str, int] = field(default_factory=dict)  # extra violations per kind
    scores: dict[str, float] = field(default_factory=dict)  # replace the self-scores ("NaN", "Infinity", 7.0)
    gate: Diffuser = field(default_factory=Diffuser, repr=False)
    error: Diffuser = field(default_factory=Diffuser, repr=False)

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        """Validate an /admin/fault body; ValueError names the bad field."""
        if not isinstance(body, dict):
            raise ValueError("body: expected a JSON object")
        known = {"gate_fail_fraction", "error_fraction", "latency_s", "answer_mode", "governance", "scores"}
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown field")
        values: dict[str, float] = {}
        for name in ("gate_fail_fraction", "error_fraction", "latency_s"):
            value = body.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0")
            if name != "latency_s" and value > 1:
                raise ValueError(f"{name}: expected a fraction within [0, 1]")
            values[name] = float(value)
        mode = body.get("answer_mode")
        if mode not in ANSWER_MODES:
            raise ValueError(f"answer_mode: expected one of {[m for m in ANSWER_MODES if m]}")
        scores = body.get("scores") or {}
        if not isinstance(scores, dict) or not all(isinstance(v, int | float | str) for v in scores.values()):
            raise ValueError("scores: expected {metric: number}")
        gov = body.get("governance") or {}
        if not isinstance(gov, dict) or any(k not in _KINDS or not isinstance(v, int) for k, v in gov.items()):
            raise ValueError(f"governance: expected {{kind: int}} with kind in {list(_KINDS)}")
        return cls(
            gate_fail_fraction=values["gate_fail_fraction"],
            error_fraction=values["error_fraction"],
            latency_s=values["latency_s"],
            answer_mode=mode,
            governance=dict(gov),
            scores={k: float(v) for k, v in scores.items()},
            gate=Diffuser(values["gate_fail_fraction"]),
            error=Diffuser(values["error_fraction"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gate_fail_fraction": self.gate_fail_fraction,
            "error_fraction": self.error_fraction,
            "latency_s": self.latency_s,
            "answer_mode": self.answer_mode,
            "governance": self.governance,
            "scores": {k: str(v) for k, v in self.scores.items()},
        }
