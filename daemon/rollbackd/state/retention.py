"""Journal retention: every ``journal_retention.interval`` the alert and event rows older than
``journal_retention.max_age`` that no incident refers to are deleted (``StateStore.prune_journal``).
Incidents, their steps and their events are kept: they are the record of what rollbackd did."""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rollbackd.scheduler import Scheduler
    from rollbackd.wiring import Core

log = logging.getLogger(__name__)
JOB = "journal-retention"


def schedule(core: Core, scheduler: Scheduler) -> None:
    from rollbackd.scheduler import Schedule

    cfg = core.settings.journal_retention
    if cfg.max_age is not None:
        scheduler.add(JOB, Schedule(interval=cfg.interval), functools.partial(prune, core))


async def prune(core: Core, now: float | None = None) -> dict[str, int]:
    max_age = core.settings.journal_retention.max_age
    if max_age is None:
        return {}
    counts = await core.store.prune_journal((time.time() if now is None else now) - max_age)
    log.info("journal_pruned", extra={"max_age_s": max_age, **counts})
    return counts
