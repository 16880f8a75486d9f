"""One drill of one service: the rollback plan rehearsed on scratch copies, every stage timed.

    pick      the newest green release (its image) and the latest verified snapshot set (the green
              release's own, else the newest)
    prepare   DataSet.prepare(set): every store restored aside (<db>__rb_<set>, <collection>__rb_<set>),
              the set re-hashed, row and point counts checked against the manifest
    deploy    the green image in <container>__drill_<id> on the drill port, env pointed at the copies;
              healthy at drill.health_url
    verify    the service's checks rewritten to the scratch URL and database (default: all but counts,
              which prepare already enforced, and alert_cleared, which needs an incident)
    teardown  ALWAYS: the container removed, the copies discarded; its errors are in the report

Isolation (rollbackd.drill.isolation): pick fingerprints the live data; deploy refuses a scratch container
whose env or command reaches anything live; after the teardown the live fingerprint is taken again and
any change is NO-GO with a page. Interruption (rollbackd.drill.journal): what the drill makes is
journaled first; SIGTERM cancels at once and tears down within ``teardown_timeout``; after kill -9 the
next start sweeps the leftovers and records the drill NO-GO "interrupted".

The data lock (``DataSet.lock``) is held from prepare to teardown: the copies' names are the ones an
incident's data.prepare of the same set would use, and retention would sweep them as orphans. A drill
never waits on an incident: it is refused while one is active, and one that opens while it runs
pre-empts it (the drill stops, tears down, releases the lock: NO-GO "pre-empted").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rollbackd import logs
from rollbackd.drill import isolation, journal, scratch
from rollbackd.drill.options import DrillOptions
from rollbackd.drill.report import GO, NO_GO, build_report, record_report
from rollbackd.records import JSON

if TYPE_CHECKING:
    from rollbackd.plan import ServiceRuntime
    from rollbackd.wiring import Core

log = logging.getLogger(__name__)
COUNTS_NOTE = (
    "row and point counts were checked against the snapshot manifest by prepare (the `counts` check is not run again)"
)


def new_drill_id(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%d_%H%M%S") + "_" + secrets.token_hex(2)


class StageFailed(Exception):
    """A stage's verdict is NO-GO; the message is the report's reason."""


@dataclass
class DrillState:
    """What the stages found and made, for the teardown and the report."""

    id: str
    reason: str
    actor: str
    started_at: float
    stages: list[JSON] = field(default_factory=list)
    results: list[JSON] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    snapshot_set: str | None = None
    release: JSON | None = None
    prepared: dict[str, JSON] = field(default_factory=dict)
    container: scratch.ScratchContainer | None = None
    scratch: JSON = field(default_factory=dict)
    preparing: bool = False  # prepare started and has not returned: copies may exist unrecorded
    live_before: dict[str, JSON] | None = None
    isolation: JSON = field(default_factory=dict)


class Drill:
    """The drills of one service (``runtime.caps.drill``): one at a time."""

    def __init__(
        self, core: Core, runtime: ServiceRuntime, options: DrillOptions, clock: Callable[[], float] = time.time
    ) -> None:
        self.core = core
        self.runtime = runtime
        self.service = runtime.name
        self.options = options
        self.clock = clock
        self.task: asyncio.Task[JSON] | None = None
        self.running_id: str | None = None
        self.recovery: asyncio.Task[None] | None = None  # a new leader's sweep of what the last one left
        self._pages: set[asyncio.Task[None]] = set()

    # ---- entry points ------------------------------------------------------------------------------
    async def active_incident(self) -> str | None:
        for incident in await self.core.store.active_incidents():
            if incident.service == self.service:
                return incident.id
        return None

    def start(self, *, reason: str, actor: str) -> asyncio.Task[JSON]:
        """Start a drill in its own task (a caller that goes away does not stop it halfway)."""
        state = DrillState(id=new_drill_id(self.clock()), reason=reason, actor=actor, started_at=self.clock())
        self.running_id = state.id
        self.task = asyncio.create_task(self.run(state), name=f"drill-{self.service}-{state.id}")
        return self.task

    async def scheduled(self) -> None:
        if self.task is not None and not self.task.done():
            log.warning("drill_skipped", extra={"service": self.service, "why": "a drill is running"})
            return
        incident = await self.active_incident()
        if incident is not None:
            log.warning("drill_skipped", extra={"service": self.service, "why": f"incident {incident} is active"})
            return
        await self.start(reason="scheduled drill", actor="scheduler")

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    # ---- the drill -------------------------------------------------------------------------------
    async def run(self, state: DrillState) -> JSON:
        with logs.bound(svc=self.service):
            log.info("drill_started", extra={"drill_id": state.id, "reason": state.reason, "actor": state.actor})
            verdict, why = NO_GO, ""
            data = self.runtime.caps.snapshots
            try:
                if self.recovery is not None:  # the interrupted drill's record first, then this one's
                    await asyncio.shield(self.recovery)
                async with data.lock if data is not None else contextlib.nullcontext():
                    try:
                        await journal.write(self, state)
                        verdict, why = await self._preemptible(state)
                    except Exception as exc:  # a bug here is still a NO-GO with a report, and a teardown
                        log.exception("drill_crashed", extra={"drill_id": state.id})
                        verdict, why = NO_GO, f"internal error: {type(exc).__name__}: {exc}"
                    finally:
                        torn_down = await self._shielded(self._bounded_teardown(state))
                    breach = await self._live_changes(state)
            except asyncio.CancelledError:
                why = "interrupted: the daemon stopped during the drill"
                torn_down = bool(state.stages and state.stages[-1]["name"] == "teardown" and state.stages[-1]["ok"])
                await self._shielded(self._finish(state, self.report(state, NO_GO, why, torn_down)))
                raise
            finally:
                self.running_id = None
            if breach:
                verdict, why = (
                    NO_GO,
                    (
                        "the live data changed during the drill: "
                        + "; ".join(breach)
                        + " (a table the live service writes by itself belongs in drill.live_writes)"
                    ),
                )
            report = self.report(
                state,
                verdict if torn_down else NO_GO,
                why if torn_down or verdict != GO else "teardown incomplete",
                torn_down,
            )
            await self._finish(report=report, state=state)
            if breach:
                self._page(report)
            return report

    async def _finish(self, state: DrillState, report: JSON) -> None:
        """Record the report; forget the journaled leftovers only when the teardown completed."""
        await record_report(self.core, report, self.clock())
        if report["torn_down"]:
            try:
                await journal.clear(self)
            except Exception:  # the next start sweeps again (nothing left) and reports it
                log.exception("drill_journal_clear_failed", extra={"drill_id": state.id})

    async def _bounded_teardown(self, state: DrillState) -> bool:
        try:
            return await asyncio.wait_for(self._teardown(state), self.options.teardown_timeout)
        except TimeoutError:
            state.stages.append(
                {
                    "name": "teardown",
                    "seconds": self.options.teardown_timeout,
                    "ok": False,
                    "detail": f"not finished within {self.options.teardown_timeout:g}s; the next "
                    "start sweeps what is left",
                }
            )
            return False

    async def _live_changes(self, state: DrillState) -> list[str]:
        """The live fingerprint again, compared with pick's; a failure to read it is a NO-GO too."""
        data = self.runtime.caps.snapshots
        if state.live_before is None or data is None:
            return []
        try:
            after = await isolation.fingerprint(data, self.options.live_writes)
        except Exception as exc:
            return [f"cannot fingerprint the live data after the drill ({type(exc).__name__}: {exc})"]
        changed = isolation.changes(state.live_before, after)
        state.isolation.update(after=after, changes=changed)
        if changed:
            log.error("drill_isolation_breach", extra={"drill_id": state.id, "changes": changed})
        return changed

    def _page(self, report: JSON) -> None:
        task = asyncio.create_task(journal.page_breach(self, report))
        self._pages.add(task)
        task.add_done_callback(self._pages.discard)

    async def _shielded(self, coro: Awaitable[Any]) -> Any:
        """Run to the end even if the drill is cancelled meanwhile (teardown, the record)."""
        task = asyncio.ensure_future(coro)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _preemptible(self, state: DrillState) -> tuple[str, str]:
        work = asyncio.create_task(self._stages(state))
        watch = asyncio.create_task(self._watch_incidents())
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                incident = watch.result()
                self._stage_cut(state, f"pre-empted by incident {incident}")
                return NO_GO, f"pre-empted by incident {incident}; torn down so the rollback can run"
            return work.result()
        finally:
            for task in (work, watch):
                task.cancel()
            await asyncio.gather(work, watch, return_exceptions=True)

    async def _watch_incidents(self) -> str:
        while True:
            await asyncio.sleep(self.options.incident_poll)
            try:
                incident = await self.active_incident()
            except Exception:  # the journal hiccuped: look again
                log.warning("drill_incident_poll_failed", exc_info=True)
                continue
            if incident is not None:
                return incident

    def _stage_cut(self, state: DrillState, why: str) -> None:
        if state.stages and state.stages[-1].get("running"):
            stage = state.stages[-1]
            stage.pop("running")
            stage.update(ok=False, detail=why, seconds=round(time.monotonic() - stage["_t0"], 3))

    async def _stages(self, state: DrillState) -> tuple[str, str]:
        from rollbackd.drill import stages

        for name, fn in (
            ("pick", stages.pick),
            ("prepare", stages.prepare),
            ("deploy", stages.deploy),
            ("verify", stages.verify),
        ):
            stage: JSON = {
                "name": name,
                "seconds": 0.0,
                "ok": False,
                "detail": "",
                "running": True,
                "_t0": time.monotonic(),
            }
            state.stages.append(stage)
            with logs.bound(step_name=f"drill.{name}"):
                try:
                    detail = await fn(self, state)
                except StageFailed as exc:
                    stage.update(ok=False, detail=str(exc))
                except Exception as exc:  # any failure of a stage is its NO-GO, with the error as the reason
                    log.warning("drill_stage_failed", exc_info=True, extra={"drill_id": state.id, "stage": name})
                    stage.update(ok=False, detail=f"{type(exc).__name__}: {exc}")
                else:
                    stage.update(ok=True, detail=detail)
                stage.pop("running")
                stage["seconds"] = round(time.monotonic() - stage["_t0"], 3)
                log.info(
                    "drill_stage",
                    extra={"drill_id": state.id, "stage": name, "ok": stage["ok"], "seconds": stage["seconds"]},
                )
            if not stage["ok"]:
                return NO_GO, f"{name}: {stage['detail']}"
        return GO, "the snapshot restored, the green release served it and every check passed"

    async def _teardown(self, state: DrillState) -> bool:
        """Remove the scratch container, discard the copies; every error named in the stage's detail."""
        self._stage_cut(state, "interrupted")
        started = time.monotonic()
        done, errors = [], []
        if state.container is not None:
            try:
                removed = await state.container.remove()
                done.append(f"container {state.container.name} {'removed' if removed else 'never created'}")
                if await state.container.exists():
                    errors.append(f"container {state.container.name} still exists")
            except Exception as exc:
                errors.append(f"container {state.container.name}: {exc}")
        data = self.runtime.caps.snapshots
        if state.prepared and data is not None:
            keep = await journal.live_copies(data, state.prepared)  # deletion asks the servers, never the name
            errors += [
                f"{n} copy {journal.copy_name(r)} is live (or the servers could not say): not dropped"
                for n, r in state.prepared.items()
                if n in keep
            ]
            state.prepared = {n: r for n, r in state.prepared.items() if n not in keep}
            dropped = await data.discard(state.prepared)
            done += [f"{n} copy {journal.copy_name(r)} dropped" for n, r in state.prepared.items() if n in dropped]
            for name, restored in state.prepared.items():
                try:
                    still = await data.snapshotters[name].is_prepared(restored)
                except Exception as exc:
                    errors.append(f"{name} copy {journal.copy_name(restored)}: cannot tell if it is gone ({exc})")
                    continue
                if still:
                    errors.append(f"{name} copy {journal.copy_name(restored)} NOT dropped (see the daemon log)")
        elif state.preparing:  # prepare was cut short: it may have made copies it never returned
            swept, failed = await journal.sweep_data(self, {}, state.snapshot_set, True, guard_incident=False)
            done, errors = done + swept, errors + failed
        ok = not errors
        detail = "; ".join(errors + done) or "nothing to tear down"
        state.stages.append(
            {"name": "teardown", "seconds": round(time.monotonic() - started, 3), "ok": ok, "detail": detail}
        )
        (log.info if ok else log.error)("drill_teardown", extra={"drill_id": state.id, "ok": ok, "detail": detail})
        return ok

    def report(self, state: DrillState, verdict: str, reason: str, torn_down: bool) -> JSON:
        return build_report(self.service, state, verdict, reason, torn_down, self.clock())
