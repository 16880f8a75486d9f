"""Scheduled jobs (APScheduler 3.x, in the daemon's event loop): snapshots, retention, baseline
refresh, drills. A schedule in config is ``{interval: 6h}`` or ``{cron: "0 3 * * *"}`` (UTC)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from rollbackd.config import Duration

log = logging.getLogger(__name__)


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    interval: Duration | None = None
    cron: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("give exactly one of `interval` or `cron`")
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"cron: {exc}") from exc
        if self.interval is not None and self.interval < 1:
            raise ValueError("interval must be at least 1s")
        return self


class Scheduler:
    def __init__(self, gate: Callable[[], bool] | None = None) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self.gate = gate  # False: this replica follows, its jobs are the leader's to run (rollbackd.ha)
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self.jobs: list[str] = []

    def add(self, name: str, schedule: Schedule, job: Callable[[], Awaitable[Any]]) -> None:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        trigger = (
            CronTrigger.from_crontab(schedule.cron, timezone="UTC")
            if schedule.cron
            else IntervalTrigger(seconds=schedule.interval or 0, timezone="UTC")
        )

        async def run() -> None:
            if self.gate is not None and not self.gate():
                log.debug("scheduled_job_left_to_leader", extra={"job": name})
                return
            try:
                await job()
            except Exception:  # a failed job is logged and counted where it matters; the daemon goes on
                log.exception("scheduled_job_failed", extra={"job": name})

        self._scheduler.add_job(
            run, trigger, id=name, name=name, max_instances=1, coalesce=True, misfire_grace_time=300
        )
        self.jobs.append(name)

    def start(self) -> None:
        if self.jobs:
            self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
