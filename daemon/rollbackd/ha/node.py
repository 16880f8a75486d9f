"""This daemon's place among the replicas, wired to its core: who runs incidents, schedules, drills.

postgres  a Replica contends for the lease; while it leads it resumes the journal's active
          incidents (as a restarted daemon would), polls for incidents a follower's intake
          opened, and runs scheduled jobs; when it steps down it stops its incidents
sqlite    single node: always the leader, incidents resumed once at start
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from rollbackd.ha import SingleNode, identity
from rollbackd.ha.lease import Grant, PostgresLease
from rollbackd.ha.replica import Replica

if TYPE_CHECKING:
    from rollbackd.wiring import Core

log = logging.getLogger(__name__)


class Node:
    def __init__(self, core: Core, listen: str) -> None:
        self.core = core
        ha = core.settings.ha
        self.gauge = Gauge(
            "rollbackd_leader",
            "1 while this replica leads (runs incidents, schedules, drills)",
            registry=core.metrics.registry,
        )
        self.replica: Replica | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.resumed: list[str] = []
        if core.settings.state.type == "postgres":
            me = identity(ha.replica_id, listen)
            lease = PostgresLease(str(core.settings.state.options()["dsn"]), timeout=max(0.5, ha.lease / 3))
            self.replica = Replica(me, lease, lease=ha.lease, on_lead=self._lead, on_follow=self._follow)
            core.runner.leadership = self.replica
            core.runner.on_fenced = self.replica.fenced
        else:
            core.runner.leadership = SingleNode()

    @property
    def leading(self) -> bool:
        return self.core.runner.leadership.leading

    def describe(self) -> str:
        if self.replica is None:
            return "single node (sqlite): always leads; replicas need the postgres state store"
        return f"replica {self.replica.me.id}, lease {self.replica.lease:g}s through postgres"

    async def start(self) -> list[str]:
        """Decide once before the API listens (a lone or restarted replica leads at once)."""
        if self.replica is None:
            self.gauge.set(1)
            resumed = await self.core.runner.resume_open()
            await self._plugins("lead")
            return resumed
        await self.replica.tick()
        # extended, not replaced: the first tick may have started the lead hooks (_background)
        self._tasks += [asyncio.create_task(self.replica.run()), asyncio.create_task(self._poll())]
        return self.resumed

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.core.settings.ha.poll)
            try:
                await self.core.runner.adopt_active()
            except Exception as exc:  # a store outage: the next poll tries again
                log.warning("adopt_active_failed", extra={"error": str(exc)})

    async def _lead(self, grant: Grant) -> None:
        assert self.replica is not None
        self.gauge.set(1)
        previous = grant.previous if grant.previous not in (None, self.replica.me.id) else None
        self.resumed = await self.core.runner.resume_open(taken_over_from=previous)
        log.warning("leading", extra={"fence": grant.token, "taken_over_from": previous, "resumed": self.resumed})
        # not awaited here: the lease's renewals must not wait for a sweep of containers and copies
        self._background(self._plugins("lead"))

    async def _follow(self, why: str) -> None:
        self.gauge.set(0)
        await self.core.runner.step_down()
        await self._plugins("follow")
        log.warning("following", extra={"why": why})

    async def _plugins(self, hook: str) -> None:
        """The capabilities' ``lead`` / ``follow`` hooks (rollbackd.plugins); a failure is logged."""
        from rollbackd import plugins

        for plugin in plugins.having(hook):
            try:
                await getattr(plugin, hook)(self.core)
            except Exception:
                log.exception("plugin_hook_failed", extra={"hook": hook, "plugin": plugin.__name__})

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def release(self) -> None:
        """After the runner stopped: hand the lease over and leave the replica list."""
        if self.replica is not None:
            await self.replica.stop()
