"""One announcement per service and suppression reason per window; the next one says how many were held back."""

from __future__ import annotations

from rollbackd.incidents.coalesce import Coalescer
from rollbackd.reasons import Reason


def test_one_announcement_per_service_and_reason_per_window() -> None:
    now = [1000.0]
    c = Coalescer(60, clock=lambda: now[0])
    B, H = Reason.BUDGET_EXHAUSTED, Reason.HELD
    assert c.admit("rag", B) == 0
    assert [c.admit("rag", B) for _ in range(6)] == [None] * 6  # a flapping alert: counted, not posted
    assert c.admit("search", B) == 0 and c.admit("rag", H) == 0  # other services and reasons unaffected
    now[0] += 59.9
    assert c.admit("rag", B) is None
    now[0] += 0.2
    assert c.admit("rag", B) == 7  # a new window: announced, with the 7 held back
    assert c.admit("rag", B) is None
