"""SQLite journal: the embedded default. WAL mode; one connection on one dedicated thread, so calls
are ordered and never block the event loop. ``synchronous=NORMAL`` survives a crash of the daemon
(kill -9); a power cut may lose the last transactions: use ``synchronous: full`` to pay for that."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from rollbackd.config import Duration
from rollbackd.errors import IncidentActiveError, StateError
from rollbackd.state.checkpoint import BACKSTOP_PAGES, Checkpointer
from rollbackd.state.lanes import LaneExecutor
from rollbackd.state.sql import SqlStateStore, Statement

_PLACEHOLDER = re.compile(r"\$(\d+)")
# SQLite names the columns of a violated unique index; rb_incidents_one_active is the only one on `service`.
_ONE_ACTIVE = "UNIQUE constraint failed: rb_incidents.service"


@functools.lru_cache(maxsize=2048)
def _native(sql: str) -> str:
    """``$1`` -> ``?1``. Cached: the statements are a few hundred texts, and a storm's multi-row
    INSERT has hundreds of placeholders (the rewrite cost more than SQLite running it)."""
    return _PLACEHOLDER.sub(r"?\1", sql)


class WriterLock:
    """Taken around each write by every process of this journal (the daemon, its acceptors, the CLI).
    SQLite makes a writer that finds the database locked sleep 1, 2, 5, 10... ms before it looks again;
    two processes committing all the time would pay those sleeps (a storm's p99). This lock is polled
    every 50 us to 1 ms instead. Never waited on past ``patience``: from there SQLite's busy timeout
    decides, so a writer stopped while holding it stalls nobody."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.contextmanager
    def held(self, patience: float) -> Iterator[None]:
        taken = self._take(patience)
        try:
            yield
        finally:
            if taken:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _take(self, patience: float) -> bool:
        deadline, pause = time.monotonic() + patience, 0.00005
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.001)

    def close(self) -> None:
        os.close(self.fd)


class SqliteStateStore(SqlStateStore):
    serial_type = "INTEGER PRIMARY KEY AUTOINCREMENT"
    epoch_now = "((julianday('now') - 2440587.5) * 86400.0)"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        path: str = "./var/rollbackd.db"
        synchronous: Literal["normal", "full"] = "normal"
        busy_timeout: Duration = 5.0  # how long a write waits for another writer before it is an error

    def __init__(self, options: Options) -> None:
        self.options = options
        self._conn: sqlite3.Connection | None = None
        self._writer: WriterLock | None = None
        self.checkpointer: Checkpointer | None = None
        self._executor = LaneExecutor("rollbackd-sqlite")  # storm batches never ahead of an incident (lanes.py)

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.IntegrityError as exc:
            if _ONE_ACTIVE in str(exc):
                raise IncidentActiveError(f"sqlite {self.options.path}: {exc}") from exc
            raise StateError(f"sqlite {self.options.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StateError(f"sqlite {self.options.path}: {exc}") from exc

    async def _connect(self) -> None:
        def connect() -> sqlite3.Connection:
            path = Path(self.options.path)
            if str(path) != ":memory:":
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.options.synchronous.upper()}")
            conn.execute(f"PRAGMA busy_timeout={int(self.options.busy_timeout * 1000)}")
            if str(path) != ":memory:":
                self._writer = WriterLock(f"{path}-writer.lock")
                conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")  # the checkpointer's job (checkpoint.py)
                if self.checkpointer is None:
                    self.checkpointer = Checkpointer(str(path))
                    self.checkpointer.start()
            return conn

        self._conn = await self._run(connect)

    async def _close(self) -> None:
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)  # it may be in the middle of a copy
            self.checkpointer = None
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._executor.shutdown(wait=True)

    def _sql(self, sql: str) -> str:
        return _native(sql)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError("the sqlite state store is not open")
        return self._conn

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        return self._writer.held(self.options.busy_timeout) if self._writer else contextlib.nullcontext()

    async def _execute(self, sql: str, *args: Any) -> None:
        def run() -> None:
            with self._writing():
                self.conn.execute(self._sql(sql), args)

        await self._run(run)

    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if sql.lstrip().startswith("SELECT"):  # readers never wait in WAL mode
            result: list[dict[str, Any]] = await self._run(self._rows, sql, args)
            return result
        return await self._transaction(lambda: self._rows(sql, args))

    async def _atomic(self, statements: Sequence[Statement]) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            for sql, args in statements:
                rows = self._rows(sql, args)
            return rows

        return await self._transaction(run)

    async def _atomic_then(
        self, first: Sequence[Statement], then: Callable[[list[dict[str, Any]]], Sequence[Statement]]
    ) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            rows = [row for sql, args in first for row in self._rows(sql, args)]
            for sql, args in then(rows):
                self._rows(sql, args)
            return rows

        return await self._transaction(run)

    def _rows(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(self._sql(sql), tuple(args)).fetchall()]

    async def _transaction(self, work: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            conn = self.conn
            with self._writing():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = work()
                    conn.execute("COMMIT")
                    return rows
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

        result: list[dict[str, Any]] = await self._run(run)
        return result
