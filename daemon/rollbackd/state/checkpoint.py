"""WAL checkpoints off the commit path (the SQLite journal).

By default the commit that takes SQLite's WAL past 1,000 pages copies those pages back into the
database file and syncs it, inside that commit, holding the writers' lock: in a storm across many
services (each commit touching a page of every service's index) that was every few dozen commits,
and the other writers (the daemon and its acceptors) waited through it. A thread of each store does
it instead, every ``CHECKPOINT_EVERY_S``, on its own connection, in PASSIVE mode (it never waits for
a writer and no writer waits for it), so a page rewritten by many commits is copied once. Commits
still checkpoint past ``BACKSTOP_PAGES`` (64 MiB at 4 KiB pages): a process stopped with its thread
(SIGSTOP, a debugger) cannot let the WAL grow without end."""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 0.2  # measured: 0.5 s made each copy long enough to show in the webhook's p99
BACKSTOP_PAGES = 16_000


class Checkpointer:
    """Copies the WAL into the database file in the background while the store is open."""

    def __init__(self, path: str, every: float = CHECKPOINT_EVERY_S) -> None:
        self.path = path
        self.every = every
        self.last: tuple[int, int, int] | None = None  # (busy, WAL frames, frames copied) of the last one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rollbackd-sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)  # it never waits on a lock (timeout 0): a copy in progress at most

    def _loop(self) -> None:
        # timeout 0: it never waits for a lock (a writer's, or the recovery after a process killed
        # mid-commit); it tries again next time. Waiting (sqlite3's default is 5 s) only delayed a stop.
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        failing = False
        try:
            while not self._stop.wait(self.every):
                try:
                    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    if not failing:  # once per failing spell: the commits' backstop still bounds the WAL
                        log.warning("sqlite_checkpoint_failed", extra={"path": self.path, "error": str(exc)})
                    failing = True
                    continue
                failing = False
                self.last = (busy, frames, copied)
        finally:
            conn.close()
