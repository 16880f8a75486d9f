"""The batcher behind group commit and group read: concurrent callers share one call, each gets that
call's result; a caller that goes away (its client hung up) cancels only its own wait, never the round
trip the others wait for; an error reaches every caller of the failed call; shutdown tells nobody "done"."""

from __future__ import annotations

import asyncio

import pytest

from rollbackd.state.group import Batcher


class Calls:
    def __init__(self) -> None:
        self.seen: list[list[int]] = []
        self.gate = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        self.seen.append(list(items))
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return [item * 10 for item in items]


async def test_callers_arriving_during_a_call_share_the_next_one() -> None:
    calls = Calls()
    batcher: Batcher[int, list[int]] = Batcher(calls)
    first = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0)  # the first call is in flight
    rest = [asyncio.create_task(batcher.submit([n, n + 1])) for n in (2, 4, 6)]
    await asyncio.sleep(0)
    calls.gate.set()
    assert await first == ([10], 0)
    assert [await task for task in rest] == [([20, 30, 40, 50, 60, 70], start) for start in (0, 2, 4)]
    assert calls.seen == [[1], [2, 3, 4, 5, 6, 7]] and batcher.calls == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_others_call() -> None:
    calls = Calls()
    batcher: Batcher[int, list[int]] = Batcher(calls)
    leaving = asyncio.create_task(batcher.submit([1]))
    staying = asyncio.create_task(batcher.submit([2]))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    calls.gate.set()
    assert await staying == ([10, 20], 1)
    assert leaving.cancelled() and batcher.calls == 1


async def test_an_error_reaches_every_caller_of_the_failed_call() -> None:
    calls = Calls()
    calls.error = RuntimeError("journal unreachable")
    batcher: Batcher[int, list[int]] = Batcher(calls)
    tasks = [asyncio.create_task(batcher.submit([n])) for n in range(3)]
    await asyncio.sleep(0)
    calls.gate.set()
    for task in tasks:
        with pytest.raises(RuntimeError, match="journal unreachable"):
            await task
    assert batcher.calls == 0


async def test_shutdown_cancels_every_waiting_caller() -> None:
    calls = Calls()
    batcher: Batcher[int, list[int]] = Batcher(calls)
    in_flight = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0)
    queued = asyncio.create_task(batcher.submit([2]))  # the next batch, not yet sent
    await asyncio.sleep(0)
    assert batcher._worker is not None
    batcher._worker.cancel()
    for task in (in_flight, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
