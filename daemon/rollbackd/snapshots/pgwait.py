"""Bounded waits with names: every statement rollbackd runs against the live database (and the server's
maintenance database) has a lock_timeout and a statement_timeout, pg_dump has --lock-wait-timeout, and when a
wait ends in a timeout the error names who held the lock: pid, application_name and query of the sessions
``pg_blocking_pids`` reported for rollbackd's own sessions (found by their application_name) while it waited.
A migration left open with ACCESS EXCLUSIVE is then a clear refusal in seconds, not a silent stall."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from rollbackd.errors import FatalError
from rollbackd.records import JSON
from rollbackd.snapshots.pgtools import Dsn, connect

log = logging.getLogger(__name__)

BLOCKERS_SQL = """
SELECT DISTINCT b.pid, b.application_name, b.state, left(b.query, 200) AS query
FROM pg_stat_activity w CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS x(pid)
JOIN pg_stat_activity b ON b.pid = x.pid
WHERE w.application_name = $1 ORDER BY 1"""
_WAIT_TEXT = ("could not obtain lock", "lock timeout", "statement timeout", "LockNotAvailable", "QueryCanceled")


def settings(app_name: str, lock_timeout: float, statement_timeout: float) -> dict[str, str]:
    """Server settings for a bounded session (0 s statement_timeout: none)."""
    return {
        "application_name": app_name,
        "lock_timeout": f"{int(lock_timeout * 1000)}ms",
        "statement_timeout": f"{int(statement_timeout * 1000)}ms",
    }


def is_wait_failure(exc: BaseException) -> bool:
    """A lock or statement timeout, raised by asyncpg or reported by pg_dump (in the message or the cause)."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) in ("55P03", "57014") or any(t in str(seen) for t in _WAIT_TEXT):
            return True
        seen = seen.__cause__
    return False


def describe(blockers: list[JSON]) -> str:
    return "; ".join(
        f"pid {b['pid']} (application {b['application_name'] or '-'!r}, {b['state'] or '-'}, query {b['query']!r})"
        for b in blockers
    )


class Blockers:
    """Watches, while a step runs, which sessions block the sessions named ``app_name`` (best effort: a
    failure to watch never fails the step)."""

    def __init__(self, dsn: Dsn, app_name: str, interval: float) -> None:
        self.dsn, self.app_name, self.interval = dsn, app_name, interval
        self.seen: list[JSON] = []

    async def watch(self) -> None:
        try:
            async with connect(self.dsn, "postgres") as conn:
                while True:
                    rows = await conn.fetch(BLOCKERS_SQL, self.app_name)
                    if rows:
                        self.seen = [dict(r) for r in rows]
                    await asyncio.sleep(self.interval)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the step itself reports what matters
            log.warning("pg_blocker_watch_failed", extra={"error": str(exc)})


@contextlib.asynccontextmanager
async def naming_blockers(dsn: Dsn, app_name: str, what: str, lock_timeout: float) -> AsyncIterator[Blockers]:
    """Run the block; a lock or statement timeout inside it becomes a FatalError naming the blockers."""
    blockers = Blockers(dsn, app_name, max(0.05, min(0.5, lock_timeout / 4)))
    task = asyncio.create_task(blockers.watch())
    try:
        yield blockers
    except Exception as exc:
        if not is_wait_failure(exc):
            raise
        who = describe(blockers.seen) or "a session that is gone by now"
        raise FatalError(
            f"{what} waited too long (lock_timeout {lock_timeout:g}s) and gave up; blocked by "
            f"{who}; nothing live changed"
        ) from exc
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def session(
    dsn: Dsn, database: str | None, *, app_name: str, lock_timeout: float, statement_timeout: float, what: str
) -> AsyncIterator[Any]:
    """A bounded session (lock and statement timeouts) whose timeouts name the blockers."""
    async with (
        naming_blockers(dsn, app_name, what, lock_timeout),
        connect(dsn, database, settings=settings(app_name, lock_timeout, statement_timeout)) as conn,
    ):
        yield conn


__all__ = ["Blockers", "describe", "is_wait_failure", "naming_blockers", "session", "settings"]
