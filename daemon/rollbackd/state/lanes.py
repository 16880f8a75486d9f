"""Two lanes into a store that serialises its calls (SQLite's one connection on one thread): the work of
an alert storm (group reads and commits: rollbackd.state.group) goes in the bulk lane, everything else
(an incident's transitions and steps, the decision that opens it) in the first lane, which the thread
always serves first. A rollback's round trips never queue behind a storm's batches."""

from __future__ import annotations

import contextvars
import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")
BULK: contextvars.ContextVar[bool] = contextvars.ContextVar("rollbackd_store_bulk", default=False)
_STOP = (2, 0, None)


class LaneExecutor(Executor):
    """One worker thread; calls submitted while ``BULK`` is set wait until the first lane is empty."""

    def __init__(self, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((1 if BULK.get() else 0, next(self._order), (future, fn, args, kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._queue.put(_STOP)
        if wait:
            self._thread.join()

    def _work(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)
