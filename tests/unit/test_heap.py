"""heap.settle: start-up's objects leave every collection, young ones are collected less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from rollbackd import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_what_exists_and_raises_the_young_threshold(restored_gc: None) -> None:
    survivor = [object() for _ in range(10)]
    heap.settle()
    assert gc.get_freeze_count() > len(survivor)
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    young = [[] for _ in range(3)]  # made after: collected as usual, never frozen
    assert all(gc.is_tracked(y) for y in young)
    frozen = gc.get_freeze_count()
    gc.collect()
    assert gc.get_freeze_count() == frozen
