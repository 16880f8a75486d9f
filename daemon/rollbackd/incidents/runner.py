"""The runbook, in code: run an incident's plan stage by stage, journaled, resumable, abortable.

pending   wait the start delay; confirm the alert still fires (Prometheus); a resolved alert
          cancels it here, never later
running   each stage in order (a parallel group runs its steps together); a step the journal
          (or the world) shows done is skipped; abort stops the running stage (its processes
          killed) and ends the incident; a store outage is waited out (rollbackd.incidents.journal)
          up to ``incidents.store_outage_limit``, then the incident is paged and ended failed
finished  resolved | failed | verification_* | aborted | cancelled | dry_run; a failure holds
          automatic actions for the service until `rollbackd resume`, and escalates
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from rollbackd import facts, logs
from rollbackd.errors import FencedError, StoreUnavailable
from rollbackd.ha import Leadership, SingleNode
from rollbackd.incidents import escalate, messages
from rollbackd.incidents.execute import StepExecutor, StepFailed
from rollbackd.incidents.journal import Journal
from rollbackd.incidents.pager import Pager
from rollbackd.incidents.starts import Starts
from rollbackd.metrics import Metrics
from rollbackd.notify.queue import NotifyQueue
from rollbackd.plan import ServiceRuntime, Stage, StepContext, build_plan
from rollbackd.reasons import HOLDING_STATES, EventKind, IncidentState, Reason, StepState
from rollbackd.records import JSON, Event, Incident, Pause, StepRecord
from rollbackd.state import StateStore, fence

log = logging.getLogger(__name__)

# None: go on; otherwise the state to end in, why (the alert no longer fires, Prometheus is unreachable)
# and a detail for the announcement
Confirm = Callable[[Incident], Awaitable[tuple[IncidentState, Reason, str] | None]]
P, R = IncidentState.PENDING, IncidentState.RUNNING


class Runner:
    def __init__(
        self,
        *,
        store: StateStore,
        services: Mapping[str, ServiceRuntime],
        notify: NotifyQueue,
        metrics: Metrics,
        confirm: Confirm | None = None,
        clock: Callable[[], float] = time.time,
        store_outage_limit: float = 300.0,
        kill_grace: float = 3.0,
        leadership: Leadership | None = None,
    ) -> None:
        self.store = store
        self.starts = Starts()  # incidents not yet at their first step: storm work steps aside (starts.py)
        self.journal = Journal(store, limit=store_outage_limit, clock=clock, on_step_started=self.starts.end)
        self.services = services
        self.notify = notify
        self.metrics = metrics
        self.confirm = confirm
        self.clock = clock
        self.executor = StepExecutor(
            journal=self.journal, notify=notify, metrics=metrics, grace=kill_grace, clock=clock
        )
        self._tasks: dict[str, asyncio.Task[IncidentState]] = {}
        self.pager = Pager(store, services, clock=clock)
        self._aborting: set[str] = set()
        self._stopping = False
        # Only the leader runs incidents (rollbackd.ha); a follower leaves what its intake opened to it.
        self.leadership: Leadership = leadership or SingleNode()
        self.on_fenced: Callable[[str, int | None], Coroutine[Any, Any, None]] | None = None
        # What a capability does once an incident of its has ended (a rollout's canary after an abort); what
        # a crash cut short, the capability makes good when its replica next leads (its plugin's ``lead``).
        self.on_finished: list[Callable[[Incident], Coroutine[Any, Any, None]]] = []
        self._background: set[asyncio.Task[None]] = set()

    # ---- scheduling ---------------------------------------------------------------------------
    def start(self, incident_id: str) -> asyncio.Task[IncidentState] | None:
        """Run the incident here if this replica leads (its writes carry the lease's fencing token);
        a follower returns None: the leader picks the incident up from the journal (``adopt_active``)."""
        if not self.leadership.leading:
            log.info("incident_left_to_leader", extra={"incident_id": incident_id})
            return None
        task = self._tasks.get(incident_id)
        if task is None or task.done():
            ctx = contextvars.copy_context()
            ctx.run(fence.current.set, self.leadership.token)
            ctx.run(fence.holding.set, functools.partial(self.leadership.holds, self.leadership.token))
            task = asyncio.create_task(self._fenced_run(incident_id), name=f"incident-{incident_id}", context=ctx)
            self._tasks[incident_id] = task
            self.starts.begin(incident_id)
            task.add_done_callback(lambda t: self.starts.end(incident_id))
            task.add_done_callback(
                lambda t: self._tasks.pop(incident_id, None) if self._tasks.get(incident_id) is t else None
            )
        return task

    async def resume_open(self, *, taken_over_from: str | None = None) -> list[str]:
        """After a crash or restart (or when this replica takes the lead from ``taken_over_from``):
        pick up every incident the journal shows in progress."""
        await self.pager.resume()
        active = await self.store.active_incidents()
        for incident in active:
            log.info("incident_resumed", extra={"incident_id": incident.id, "taken_over_from": taken_over_from})
            note = messages.taken_over(incident, taken_over_from) if taken_over_from else messages.resumed(incident)
            if incident.state is R:  # its root was posted, or queued by the process that died: a thread either way
                self.notify.reply(note, root=messages.opened(incident))
            elif taken_over_from is not None:  # a pending incident's root comes when it starts
                self.notify.reply(note)
            self.start(incident.id)
        return [incident.id for incident in active]

    async def adopt_active(self) -> list[str]:
        """The leader's poll: run what a follower's intake opened, stop what a follower was asked to abort."""
        if not self.leadership.leading:
            return []
        adopted: list[str] = []
        for incident in await self.store.active_incidents():
            task = self._tasks.get(incident.id)
            if task is None or task.done():
                log.info("incident_adopted", extra={"incident_id": incident.id})
                self.start(incident.id)
                adopted.append(incident.id)
            elif incident.abort_requested and incident.id not in self._aborting:
                self._aborting.add(incident.id)
                task.cancel()
        return adopted

    async def step_down(self) -> None:
        """This replica no longer leads: stop every incident where it is (process groups killed)."""
        await self._stop_tasks()
        self._stopping = False

    async def wait(self, incident_id: str) -> IncidentState | None:
        task = self._tasks.get(incident_id)
        return await task if task is not None else None

    async def shutdown(self) -> None:
        """Stop running incidents where they are; the journal lets the next start resume them."""
        await self._stop_tasks()
        await self.pager.close()  # what is not delivered stays journaled: sent after the next start

    async def _stop_tasks(self) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _fenced_run(self, incident_id: str) -> IncidentState:
        try:
            return await self.run(incident_id)
        except FencedError as exc:  # from any write, ending writes (failed, given up) included
            return self._fenced(incident_id, exc)

    def _fenced(self, incident_id: str, exc: FencedError) -> IncidentState:
        """A write of this incident was refused: another replica leads. Nothing more is written here;
        the replica steps down (stopping the other incidents too) in a task of its own."""
        log.error("incident_fenced", extra={"incident_id": incident_id, "error": str(exc)})
        if self.on_fenced is not None:
            task = asyncio.create_task(self.on_fenced(str(exc), fence.current.get()))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return IncidentState.RUNNING

    # ---- the runbook --------------------------------------------------------------------------
    async def run(self, incident_id: str) -> IncidentState:
        incident = await self.journal.call("get_incident", lambda: self.store.get_incident(incident_id), bounded=False)
        if incident is None or not incident.active:
            return incident.state if incident else IncidentState.CANCELLED
        with logs.bound(incident=incident.id, svc=incident.service):
            self.metrics.incident_active.labels(incident.service).set(1)
            try:
                return await self._run(await self._upgraded(incident))
            except asyncio.CancelledError:
                if incident_id in self._aborting and not self._stopping:
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    return await self._aborted(incident)
                log.info("incident_interrupted")  # daemon stopping: resumed on next start
                raise
            except StoreUnavailable as exc:
                return await self._give_up(incident, exc)
            except FencedError:
                raise  # not a crash: another replica leads (``_fenced_run``)
            except Exception as exc:  # the runner itself failed: end the incident, never leave it hanging
                log.exception("incident_crashed")
                return await self.finish(incident, IncidentState.FAILED, f"rollbackd error: {exc}")
            finally:
                self._aborting.discard(incident_id)

    async def _upgraded(self, incident: Incident) -> Incident:
        """An incident journaled by an older rollbackd resumes with its context in today's format."""
        context = facts.upgrade(incident.context)
        if context != incident.context:
            await self.journal.update_incident(incident.id, context=context)
        return dataclasses.replace(incident, context=context)

    async def _run(self, incident: Incident) -> IncidentState:
        if incident.state is P:
            started = await self._leave_pending(incident)
            if started is None:
                current = await self.journal.get_incident(incident.id)
                return current.state if current else IncidentState.CANCELLED
            incident = started
        runtime = self.services[incident.service]
        stages = build_plan(
            incident.plan, f"incident {incident.id} plan", secrets_from=_configured_plan(runtime, incident)
        )
        journal = {r.index: r for r in await self.journal.steps(incident.id)}
        outputs: dict[str, JSON] = {r.name: r.output for r in journal.values() if r.state is StepState.DONE}
        index = 0
        for stage in stages:
            current = await self.journal.get_incident(incident.id)
            if current is not None and current.abort_requested:
                return await self.finish(incident, IncidentState.ABORTED, "aborted by request")
            if incident.dry_run:
                await self._dry_run(incident, stage, index)
            else:
                try:
                    await self._stage(incident, runtime, stage, index, journal, outputs)
                except StepFailed as failed:
                    return await self.finish(incident, failed.outcome, str(failed))
            index += len(stage)
        final = IncidentState.DRY_RUN if incident.dry_run else IncidentState.RESOLVED
        return await self.finish(incident, final, None)

    async def _leave_pending(self, incident: Incident) -> Incident | None:
        """Start delay and confirmation; returns the running incident, or None if it ended here."""
        delay = self.services[incident.service].config.policy.start_delay
        if incident.trigger.kind == "alert" and delay > 0:
            await asyncio.sleep(max(0.0, incident.created_at + delay - self.clock()))
        if incident.trigger.kind == "alert" and self.confirm is not None:
            verdict = await self.confirm(incident)
            if verdict is not None:
                state, reason, detail = verdict
                await self.journal.append_event(
                    Event(
                        kind=EventKind.DECISION,
                        service=incident.service,
                        incident_id=incident.id,
                        reason=reason.value,
                        actor="rollbackd",
                        data={
                            "action": "suppressed",
                            "sentence": reason.sentence,
                            "alertname": incident.trigger.alertname,
                            "detail": detail,
                        },
                    )
                )
                # The outcome message (rollbackd.incidents.messages.finished) announces it with this reason.
                await self.finish(incident, state, reason.sentence + (f": {detail}" if detail else ""))
                return None
        running = await self.journal.transition(incident.id, (P,), R, started_at=self.clock())
        if running is not None:
            self.notify.opened(messages.opened(running))
            log.info("incident_started", extra={"dry_run": running.dry_run})
        return running

    async def _stage(
        self,
        incident: Incident,
        runtime: ServiceRuntime,
        stage: Stage,
        first: int,
        journal: dict[int, StepRecord],
        outputs: dict[str, JSON],
    ) -> None:
        async def one(offset: int) -> tuple[str, JSON]:
            step = stage[offset]
            ctx = StepContext(
                incident=incident,
                runtime=runtime,
                step_name=step.name,
                attempt=0,
                dry_run=False,
                outputs=outputs,
                log=logging.LoggerAdapter(log, {}),
                save=self._saver(incident),
            )
            return step.name, await self.executor.execute(
                incident, step, first + offset, journal.get(first + offset), ctx
            )

        results = await asyncio.gather(*(one(i) for i in range(len(stage))), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for result in results:
            if not isinstance(result, BaseException):
                outputs[result[0]] = result[1]
        if failures:
            first_failure = failures[0]
            if isinstance(first_failure, StepFailed):
                raise first_failure
            raise first_failure

    async def _dry_run(self, incident: Incident, stage: Stage, first: int) -> None:
        for offset, step in enumerate(stage):
            now = self.clock()
            await self.journal.step_started(incident.id, first + offset, step.name, step.type, 0, now)
            await self.journal.step_finished(
                incident.id, first + offset, StepState.SKIPPED, now, {"would": step.describe()}, None
            )

    def _saver(self, incident: Incident) -> Callable[[str, Any], Awaitable[None]]:
        async def save(key: str, value: Any) -> None:
            incident.context[key] = value
            incident.context[facts.VERSION_KEY] = facts.CONTEXT_VERSION
            await self.journal.update_incident(incident.id, context=incident.context)

        return save

    # ---- endings ------------------------------------------------------------------------------
    async def finish(self, incident: Incident, state: IncidentState, error: str | None) -> IncidentState:
        ended = await self.journal.transition(incident.id, (P, R), state, finished_at=self.clock(), error=error)
        if ended is not None:
            await self._after_finish(ended)
        return state

    async def _after_finish(self, incident: Incident) -> None:
        self.metrics.incident_active.labels(incident.service).set(0)
        self.metrics.incidents.labels(incident.service, incident.state.value).inc()
        runtime = self.services.get(incident.service)
        if incident.state in HOLDING_STATES:
            await self.journal.set_pause(
                Pause(
                    service=incident.service,
                    kind="hold",
                    actor="rollbackd",
                    created_at=self.clock(),
                    reason=f"incident {incident.id} ended {incident.state.value}",
                    incident_id=incident.id,
                ),
                bounded=False,
            )
            self.metrics.held.labels(incident.service).set(1)
        steps = await self.journal.steps(incident.id, bounded=False)
        if incident.state in HOLDING_STATES:
            await self.pager.page(incident.service, escalate.page_body(incident, steps))
        mention = runtime.config.escalate_mention if runtime else None
        self.notify.update_root(messages.finished(incident, steps, mention))
        log.info("incident_finished", extra={"outcome": incident.state.value, "error": incident.error})
        for hook in self.on_finished:
            try:
                await hook(incident)
            except Exception:  # a hook's failure is its own: the incident has ended either way
                log.exception("incident_finished_hook_failed", extra={"incident_id": incident.id})

    async def abort(self, incident_id: str) -> Incident | None:
        """Ask a running incident to stop after its current step; a pending one stops at once."""
        incident = await self.store.get_incident(incident_id)
        if incident is None or not incident.active:
            return incident
        incident = await self.store.update_incident(incident_id, abort_requested=True)
        task = self._tasks.get(incident_id)
        if task is not None and not task.done():  # stop the running stage now: its process groups are killed
            if incident.state is R:
                self._aborting.add(incident_id)
            task.cancel()
        if incident.state is P:
            await self.finish(incident, IncidentState.ABORTED, "aborted before it started")
        elif task is not None:  # answer once the stage has stopped (bounded: the grace, then some)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self.executor.grace + 5.0)
        return await self.store.get_incident(incident_id)

    async def _aborted(self, incident: Incident) -> IncidentState:
        """The running stage was stopped by an abort: its unfinished steps end failed, then the incident."""
        for record in await self.journal.steps(incident.id, bounded=False):
            if record.state is StepState.STARTED:
                await self.journal.step_finished(
                    incident.id, record.index, StepState.FAILED, self.clock(), {}, "stopped by abort"
                )
        return await self.finish(incident, IncidentState.ABORTED, "aborted by request")

    async def _give_up(self, incident: Incident, exc: StoreUnavailable) -> IncidentState:
        """The store stayed away past the bound: page now (the page needs no store), then end the
        incident failed (and held) as soon as the store answers again."""
        log.error("incident_store_outage", exc_info=exc)
        body = escalate.page_body(dataclasses.replace(incident, state=IncidentState.FAILED, error=str(exc)), [])
        await self.pager.page(incident.service, body)
        return await self.finish(incident, IncidentState.FAILED, f"rollbackd error: {exc}")


def _configured_plan(runtime: ServiceRuntime, incident: Incident) -> list[Any]:
    """Where the plan's credentials come from: the service's plan, or a rollout's (rollbackd.rollout)."""
    if incident.trigger.kind == "rollout":
        from rollbackd.rollout.plan import entries

        return list(entries(runtime))
    return list(runtime.config.plan)
