"""The store's lanes and the storm's step aside: an incident's store calls are served before the storm's
batches queued ahead of them, and storm bodies wait while an incident is before its first step."""

from __future__ import annotations

import asyncio
import threading

from rollbackd.incidents.starts import Starts
from rollbackd.state.lanes import BULK, LaneExecutor


def test_the_first_lane_is_served_before_bulk_work_queued_earlier() -> None:
    executor = LaneExecutor("test-lanes")
    gate = threading.Event()
    order: list[str] = []
    try:
        busy = executor.submit(gate.wait)  # the thread is in a call: everything else queues
        token = BULK.set(True)
        bulk = [executor.submit(order.append, f"bulk{n}") for n in range(3)]
        BULK.reset(token)
        first = executor.submit(order.append, "incident")
        gate.set()
        for future in (busy, *bulk, first):
            future.result(timeout=10)
    finally:
        executor.shutdown()
    assert order == ["incident", "bulk0", "bulk1", "bulk2"]


def test_each_lane_keeps_its_order_and_errors_reach_the_caller() -> None:
    executor = LaneExecutor("test-lanes")
    try:
        results = [executor.submit(lambda n=n: n) for n in range(5)]
        failing = executor.submit(lambda: 1 / 0)
        assert [f.result(timeout=10) for f in results] == [0, 1, 2, 3, 4]
        assert isinstance(failing.exception(timeout=10), ZeroDivisionError)
    finally:
        executor.shutdown()


async def test_storm_work_waits_for_a_starting_incident_and_no_longer() -> None:
    starts = Starts(bound=30.0, window=60.0)  # bounds far away: only end() may release the storm
    starts.begin("inc1")
    waiting = asyncio.create_task(starts.step_aside())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    starts.end("inc1")  # its first step started
    await asyncio.wait_for(waiting, timeout=5)
    await asyncio.wait_for(starts.step_aside(), timeout=5)  # nothing starting: no wait at all


async def test_an_incident_that_waits_for_something_else_stops_holding_the_storm() -> None:
    starts = Starts(bound=30.0, window=0.0)  # e.g. waiting minutes for Prometheus to confirm
    starts.begin("inc1")
    await asyncio.wait_for(starts.step_aside(), timeout=5)
    assert not starts
