"""The leader lease in Postgres, on a connection of its own (never queued behind incident writes).

One row (rb_leader): holder, fencing token, since, expires_at, all in the server's clock. A replica
renews the lease it holds (same holder and token) or takes an expired one (token + 1); otherwise
the row is left alone and the caller stays a follower. The replicas' heartbeats live in rb_replicas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from rollbackd.errors import StateError
from rollbackd.ha import Identity
from rollbackd.state.fence import LEADER_ROW
from rollbackd.state.schema import EPOCH_NOW as _NOW

_MINE = "rb_leader.holder = excluded.holder AND rb_leader.token = $4"
# A renewal keeps token and since. A takeover of an expired lease bumps the token, and so does the
# same replica id coming back after a restart (it may take its own lease at once: the process that
# held it is gone, and the new token fences anything it left). ``previous`` is the holder before
# this statement (a CTE sees the row as it was).
_ACQUIRE = f"""
WITH prev AS (SELECT holder FROM rb_leader WHERE name = $1)
INSERT INTO rb_leader (name, holder, token, since, expires_at)
VALUES ($1, $2, 1, {_NOW}, {_NOW} + CAST($3 AS DOUBLE PRECISION))
ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN {_MINE} THEN rb_leader.token ELSE rb_leader.token + 1 END,
    since = CASE WHEN {_MINE} THEN rb_leader.since ELSE excluded.since END,
    holder = excluded.holder, expires_at = excluded.expires_at
WHERE rb_leader.holder = excluded.holder OR rb_leader.expires_at < {_NOW}
RETURNING token, since, (SELECT holder FROM prev) AS previous"""
_RELEASE = "UPDATE rb_leader SET expires_at = 0 WHERE name = $1 AND holder = $2 AND token = $3"
_HEARTBEAT = f"""
INSERT INTO rb_replicas (id, host, pid, listen, started_at, heartbeat_at, leader_since)
VALUES ($1, $2, $3, $4, {_NOW}, {_NOW}, $5)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, leader_since = excluded.leader_since,
    started_at = CASE WHEN rb_replicas.pid = excluded.pid THEN rb_replicas.started_at ELSE excluded.started_at END,
    pid = excluded.pid, host = excluded.host, listen = excluded.listen"""


@dataclass(frozen=True)
class Grant:
    token: int
    since: float
    previous: str | None  # who held the lease before this acquisition (None: nobody, ever)


class PostgresLease:
    def __init__(self, dsn: str, *, timeout: float) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None

    async def _run(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=1, max_size=1, timeout=self.timeout, command_timeout=self.timeout
                )
            async with self._pool.acquire(timeout=self.timeout) as conn, conn.transaction():
                # never wait long for a stale leader's write to end: try again on the next tick
                await conn.execute(f"SET LOCAL lock_timeout = {max(1, int(self.timeout * 1000))}")
                return list(await conn.fetch(sql, *args))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self._reset()
            raise StateError(f"leader lease: {type(exc).__name__}: {exc}") from exc

    async def _reset(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def acquire(self, me: Identity, lease: float, token: int | None) -> Grant | None:
        """Renew (``token`` is ours) or take an expired lease; None while another replica holds it."""
        rows = await self._run(_ACQUIRE, LEADER_ROW, me.id, lease, token or 0)
        if not rows:
            return None
        row = rows[0]
        return Grant(token=int(row["token"]), since=float(row["since"]), previous=row["previous"])

    async def heartbeat(self, me: Identity, leader_since: float | None) -> None:
        await self._run(_HEARTBEAT, me.id, me.host, me.pid, me.listen, leader_since)

    async def release(self, me: Identity, token: int) -> None:
        """On a clean stop: the lease ends now, a follower takes it on its next tick."""
        await self._run(_RELEASE, LEADER_ROW, me.id, token)

    async def leave(self, me: Identity) -> None:
        await self._run("DELETE FROM rb_replicas WHERE id = $1", me.id)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
