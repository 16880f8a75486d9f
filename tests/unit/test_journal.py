"""The runner's journal waits out store errors, never guesses: a compare-and-set whose answer was lost is
read again; a call failing longer than the limit raises StoreUnavailable; the outage is visible meanwhile."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from rollbackd.errors import IncidentActiveError, StateError, StoreUnavailable
from rollbackd.incidents import journal as journal_module
from rollbackd.incidents.journal import Journal
from rollbackd.reasons import IncidentState
from tests.contracts.state_stores import incident


class LostAnswerStore:
    """The first transition lands in the store, but its answer is lost (a timeout after the commit)."""

    def __init__(self) -> None:
        self.current = incident()
        self.calls = 0

    async def transition(self, incident_id: str, from_states: Any, to: IncidentState, **fields: Any) -> Any:
        self.calls += 1
        if self.current.state not in from_states:
            return None
        self.current = replace(self.current, state=to)
        if self.calls == 1:
            raise StateError("postgres state store: no answer in time (timeout)")
        return self.current

    async def get_incident(self, incident_id: str) -> Any:
        return self.current


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "BACKOFF_FIRST_S", 0.01)
    monkeypatch.setattr(journal_module, "BACKOFF_MAX_S", 0.02)


async def test_a_transition_whose_answer_was_lost_is_read_again_not_taken_for_someone_else() -> None:
    store = LostAnswerStore()
    journal = Journal(store, limit=10)  # type: ignore[arg-type]
    ended = await journal.transition("i1", (IncidentState.PENDING,), IncidentState.RUNNING)
    assert ended is not None and ended.state is IncidentState.RUNNING
    assert journal.outage.since is None  # the store answers again: the outage is over


async def test_a_call_failing_past_the_limit_raises_store_unavailable_and_shows_meanwhile() -> None:
    async def down() -> None:
        raise StateError("sqlite ./var/rollbackd.db: database is locked")

    journal = Journal(object(), limit=0.2)  # type: ignore[arg-type]
    waiting = asyncio.create_task(journal.call("step_finished", down))
    await asyncio.sleep(0.05)
    described = journal.outage.describe(journal.clock())
    assert described is not None and "database is locked" in described and "step_finished" in described
    with pytest.raises(StoreUnavailable, match=r"limit 0\.2s"):
        await waiting
    assert journal.outage.describe(journal.clock()) is None


async def test_the_constraint_is_not_an_outage() -> None:
    async def constraint() -> None:
        raise IncidentActiveError("rb_incidents_one_active")

    journal = Journal(object(), limit=10)  # type: ignore[arg-type]
    with pytest.raises(IncidentActiveError):
        await journal.call("journal_alert", constraint)
    assert journal.outage.since is None


async def test_a_call_cancelled_while_it_waits_out_an_outage_stops_being_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A leader stepping down cancels its incident while the journal waits between two tries: /readyz
    must not go on reporting that wait (it did: the follower stayed unready until some write succeeded)."""
    monkeypatch.setattr(journal_module, "BACKOFF_FIRST_S", 10.0)  # cancelled during the first wait

    async def down() -> None:
        raise StateError("postgres state store: unexpected connection_lost() call")

    journal = Journal(object(), limit=60)  # type: ignore[arg-type]
    waiting = asyncio.create_task(journal.call("append_event", down))
    await asyncio.sleep(0.05)
    assert journal.outage.describe(journal.clock()) is not None
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert journal.outage.describe(journal.clock()) is None and journal.outage.waiting == {}


async def test_two_waiting_calls_one_cancelled_the_other_still_reported() -> None:
    async def down() -> None:
        raise StateError("postgres state store: connection refused")

    journal = Journal(object(), limit=60)  # type: ignore[arg-type]
    first = asyncio.create_task(journal.call("append_event", down))
    second = asyncio.create_task(journal.call("step_finished", down))
    await asyncio.sleep(0.05)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    described = journal.outage.describe(journal.clock())
    assert described is not None and "step_finished" in described and "append_event" not in described
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert journal.outage.describe(journal.clock()) is None
