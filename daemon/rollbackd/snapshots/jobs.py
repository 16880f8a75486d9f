"""Long snapshot operations the CLI follows instead of holding one HTTP request open (a snapshot of a big
database takes minutes; a request that times out would read as "daemon unreachable"). A job runs as a task
of the daemon and is journaled (``job_started``, then ``job_done`` or ``job_failed``, with its result), so
``GET /v1/snapshots/jobs/{id}`` answers from memory while the daemon lives and from the journal after a
restart, where a job that never finished reads ``interrupted``."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from rollbackd.errors import NotFoundError
from rollbackd.reasons import EventKind
from rollbackd.records import JSON, Event

if TYPE_CHECKING:
    from rollbackd.state import EventLog

log = logging.getLogger(__name__)
KINDS = (EventKind.JOB_STARTED, EventKind.JOB_DONE, EventKind.JOB_FAILED)


class Jobs:
    def __init__(self, store: EventLog, service: str) -> None:
        self.store = store
        self.service = service
        self.known: dict[str, JSON] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self, kind: str, work: Awaitable[JSON], *, actor: str, why: str) -> JSON:
        job_id = f"{kind}-{secrets.token_hex(4)}"
        job: JSON = {
            "id": job_id,
            "kind": kind,
            "service": self.service,
            "state": "running",
            "started_at": time.time(),
            "actor": actor,
            "why": why,
        }
        self.known[job_id] = job
        await self._journal(EventKind.JOB_STARTED, job)
        task = asyncio.create_task(self._run(job, work))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return dict(job)

    async def _run(self, job: JSON, work: Awaitable[JSON]) -> None:
        try:
            job["result"] = await work
            job["state"] = "done"
        except Exception as exc:  # the job's outcome, for whoever follows it; the daemon goes on
            job.update(state="failed", error=str(exc), retryable=bool(getattr(exc, "retryable", False)))
            log.warning("snapshot_job_failed", extra={"job": job["id"], "error": str(exc)})
        job["finished_at"] = time.time()
        await asyncio.shield(self._journal(EventKind.JOB_DONE if job["state"] == "done" else EventKind.JOB_FAILED, job))

    async def _journal(self, kind: EventKind, job: JSON) -> None:
        try:
            await self.store.append_event(
                Event(
                    kind=kind,
                    service=self.service,
                    actor=str(job["actor"]),
                    data={"job": job["id"], **{k: v for k, v in job.items() if k != "id"}},
                )
            )
        except Exception:  # the job runs whether or not the journal line was written
            log.exception("snapshot_job_journal_failed", extra={"job": job["id"]})

    async def get(self, job_id: str) -> JSON:
        if job_id in self.known:
            return dict(self.known[job_id])
        events = [
            e
            for e in await self.store.events(service=self.service, kinds=KINDS, limit=500)
            if e.data.get("job") == job_id
        ]
        if not events:
            raise NotFoundError(f"no job {job_id} of service {self.service}")
        last = max(events, key=lambda e: e.ts)
        job = {"id": job_id, **{k: v for k, v in last.data.items() if k != "job"}}
        if last.kind == EventKind.JOB_STARTED:  # started, never finished: the daemon stopped while it ran
            job["state"] = "interrupted"
        return job

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
