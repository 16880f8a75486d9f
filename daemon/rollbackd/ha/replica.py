"""This replica's part in leadership: renew or take the lease every third of it, step down when it
cannot be sure it still holds it.

The lease is held for ``lease`` seconds from the moment the renewal was *sent* (a conservative
local bound: the server's expiry is later); without a renewal for two thirds of that, the replica
steps down on its own, before any other replica can take the lease. A write the store fences (the
token moved on) steps it down too. Stepping down stops every incident task (their process groups
are killed); the journal lets the new leader resume them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from rollbackd.errors import StateError
from rollbackd.ha import Identity
from rollbackd.ha.lease import Grant

log = logging.getLogger(__name__)


class LeaseBackend(Protocol):
    async def acquire(self, me: Identity, lease: float, token: int | None) -> Grant | None: ...
    async def heartbeat(self, me: Identity, leader_since: float | None) -> None: ...
    async def release(self, me: Identity, token: int) -> None: ...
    async def leave(self, me: Identity) -> None: ...
    async def close(self) -> None: ...


OnLead = Callable[[Grant], Awaitable[None]]
OnFollow = Callable[[str], Awaitable[None]]


class Replica:
    def __init__(
        self,
        me: Identity,
        backend: LeaseBackend,
        *,
        lease: float,
        on_lead: OnLead,
        on_follow: OnFollow,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.me = me
        self.backend = backend
        self.lease = lease
        self.on_lead = on_lead
        self.on_follow = on_follow
        self.clock = clock
        self.token: int | None = None
        self.since: float | None = None  # server epoch seconds this replica leads since
        self._valid_until = 0.0  # local monotonic bound of the lease
        self._lock = asyncio.Lock()

    @property
    def leading(self) -> bool:
        return self.token is not None

    @property
    def replica_id(self) -> str:
        return self.me.id

    def holds(self, token: int | None) -> bool:
        """Reads two attributes and the clock, no lock: a step's thread asks it before each engine call."""
        return token is not None and token == self.token and self.clock() <= self._valid_until

    async def run(self) -> None:
        """Renew every third of the lease (the first decision is the caller's ``tick``), and watch the
        local bound in between: a renewal hanging on a dead link must not keep a stale leader running."""
        await asyncio.gather(self._renewing(), self._watching())

    async def _renewing(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.tick()
            except Exception:  # the loop must outlive any surprise: the next tick decides again
                log.exception("lease_tick_failed")

    async def _watching(self) -> None:
        while True:
            await asyncio.sleep(min(0.2, self.lease / 10))
            await self.expire()

    async def expire(self) -> None:
        """Step down once the lease may have run out without a renewal (e.g. woken up after SIGSTOP)."""
        async with self._lock:
            if self.leading and self.clock() > self._valid_until:
                await self._step_down("lease expired before it could be renewed")

    async def tick(self) -> None:
        await self.expire()
        token, sent = self.token, self.clock()
        try:
            grant = await asyncio.wait_for(self.backend.acquire(self.me, self.lease, token), self.lease / 3)
        except (StateError, TimeoutError) as exc:
            log.warning("lease_unreachable", extra={"error": str(exc), "leading": self.leading})
            async with self._lock:
                if self.leading and self.clock() > self._valid_until:
                    await self._step_down(f"cannot renew the lease: {exc}")
            return
        async with self._lock:
            if self.token != token:  # stepped down while asking (watch, fence): the next tick decides
                return
            await self._apply(grant, sent)
        try:
            await asyncio.wait_for(self.backend.heartbeat(self.me, self.since), self.lease / 3)
        except (StateError, TimeoutError) as exc:
            log.warning("heartbeat_failed", extra={"error": str(exc)})

    async def _apply(self, grant: Grant | None, sent: float) -> None:
        if grant is None:
            if self.leading:
                await self._step_down("another replica holds the lease")
            return
        self._valid_until = sent + self.lease * 2 / 3
        if grant.token == self.token:
            return
        if self.leading:  # our own lease expired and we took it again: what ran under the old token stops
            await self._step_down("lease re-acquired under a new token")
        self.token, self.since = grant.token, grant.since
        log.warning("leader_elected", extra={"replica": self.me.id, "fence": grant.token, "previous": grant.previous})
        await self.on_lead(grant)

    async def fenced(self, detail: str, token: int | None) -> None:
        """A write under ``token`` was refused: stop leading now, unless that was an earlier term's."""
        async with self._lock:
            if self.leading and token == self.token:
                await self._step_down(detail)

    async def _step_down(self, why: str) -> None:
        token, self.token, self.since = self.token, None, None
        log.error("leader_stepped_down", extra={"replica": self.me.id, "fence": token, "why": why})
        await self.on_follow(why)

    async def stop(self) -> None:
        """Clean stop: hand the lease over at once instead of letting it expire."""
        async with self._lock:
            token, self.token, self.since = self.token, None, None
            if token is not None:  # the runner was shut down already: only the lease is left to hand over
                try:
                    await self.backend.release(self.me, token)
                except StateError as exc:
                    log.warning("lease_release_failed", extra={"error": str(exc)})
            try:
                await self.backend.leave(self.me)
            except StateError as exc:
                log.warning("replica_leave_failed", extra={"error": str(exc)})
            await self.backend.close()
