"""Housekeeping on a timer, in the daemon and its acceptor processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def every(seconds: float, job: Callable[[], Awaitable[None]], name: str) -> None:
    """Run ``job`` every ``seconds`` until cancelled; a failure is logged and the next run goes on
    (a housekeeping job must never stop its process: a journal down, the next flush carries the counts)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:
            log.exception("periodic_job_failed", extra={"job": name})
