"""Pages that are never lost: journaled before they are sent, retried until delivered, across restarts.

A page (rollbackd.incidents.escalate has the body) is written to the journal (kv ``pages.pending``)
before the first try; delivery runs in the background with a growing pause between rounds (each
round is ``page_webhook.retries`` quick tries). Delivered, it leaves the journal; a restarted daemon
sends what is still there. After ``page_webhook.give_up_after`` it is given up and logged as an
error. When the store itself is down (the outage page) the page is sent from memory all the same.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rollbackd.errors import StateError
from rollbackd.incidents import escalate
from rollbackd.plan import ServiceRuntime
from rollbackd.reasons import EventKind
from rollbackd.records import Event
from rollbackd.state import EventLog, KvStore

log = logging.getLogger(__name__)

PENDING_KEY = "pages.pending"
ROUND_PAUSE_MAX_S = 300.0


class PagerStore(KvStore, EventLog, Protocol):
    """Pending pages are a kv value; every outcome is a journal event."""


class Pager:
    def __init__(
        self,
        store: PagerStore,
        services: Mapping[str, ServiceRuntime],
        *,
        clock: Callable[[], float] = time.time,
        first_pause: float = 1.0,
    ) -> None:
        self.store = store
        self.services = services
        self.clock = clock
        self.first_pause = first_pause
        self._lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def page(self, service: str, body: dict[str, Any]) -> None:
        """Journal a page for ``service`` and deliver it in the background (no-op without page_webhook)."""
        runtime = self.services.get(service)
        if runtime is None or runtime.config.page_webhook is None:
            return
        record: dict[str, Any] = {
            "id": f"{int(self.clock())}-{secrets.token_hex(3)}",
            "service": service,
            "body": body,
            "queued_at": self.clock(),
        }
        try:
            await self._update(lambda pending: {**pending, record["id"]: record})
            await self._event(record, "queued")
        except StateError as exc:  # the store is down (the outage page): send it from memory anyway
            log.error("page_not_journaled", exc_info=exc, extra={"page_id": record["id"]})
        self._spawn(record)

    async def resume(self) -> list[str]:
        """After a restart: deliver every page the journal still holds."""
        pending: dict[str, Any] = await self.store.get_kv(PENDING_KEY) or {}
        for record in pending.values():
            self._spawn(record)
        return sorted(pending)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait(self) -> None:
        """Until every page being delivered is delivered or given up (tests, drills)."""
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    def _spawn(self, record: dict[str, Any]) -> None:
        if record["id"] not in self._tasks:
            task = asyncio.create_task(self._deliver(record), name=f"page-{record['id']}")
            self._tasks[record["id"]] = task
            task.add_done_callback(lambda _: self._tasks.pop(record["id"], None))

    async def _deliver(self, record: dict[str, Any]) -> None:
        pause = self.first_pause
        while True:
            runtime = self.services.get(record["service"])
            hook = runtime.config.page_webhook if runtime is not None else None
            if hook is None:
                return await self._give_up(record, "the service has no page_webhook any more")
            if await escalate.page(hook, record["body"]):
                return await self._settle(record, "sent")
            if self.clock() - float(record["queued_at"]) > hook.give_up_after:
                return await self._give_up(record, f"not delivered within {hook.give_up_after:g}s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, ROUND_PAUSE_MAX_S)

    async def _give_up(self, record: dict[str, Any], why: str) -> None:
        log.error(
            "page_given_up",
            extra={
                "page_id": record["id"],
                "service": record["service"],
                "why": why,
                "page_incident_id": record["body"].get("incident_id"),
            },
        )
        await self._settle(record, "given_up")

    async def _settle(self, record: dict[str, Any], outcome: str) -> None:
        try:
            await self._update(lambda pending: {k: v for k, v in pending.items() if k != record["id"]})
            await self._event(record, outcome)
        except StateError as exc:  # left in the journal: sent again after a restart (twice beats never)
            log.warning("page_not_settled", exc_info=exc, extra={"page_id": record["id"], "outcome": outcome})

    async def _update(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        async with self._lock:
            pending = await self.store.get_kv(PENDING_KEY) or {}
            await self.store.set_kv(PENDING_KEY, change(pending))

    async def _event(self, record: dict[str, Any], outcome: str) -> None:
        await self.store.append_event(
            Event(
                kind=EventKind.PAGE,
                service=record["service"],
                incident_id=record["body"].get("incident_id"),
                actor="rollbackd",
                reason=outcome,
                data={"page_id": record["id"], "outcome": outcome, "state": record["body"].get("state")},
            )
        )
