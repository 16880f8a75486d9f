"""One step, journaled write-ahead: recorded as started before it runs, and as done or failed after.
On resume a step the journal says is done is skipped; one that was interrupted (a crash or stop of
the daemon) first has its leftover processes killed, then is asked ``is_done`` (the world may show it
finished) before the same attempt runs again: an interruption is not a failed attempt
(rollbackd.incidents.leftovers bounds how many a step may have)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from rollbackd import facts, logs, procs
from rollbackd.errors import FencedError, RollbackdError, StoreUnavailable
from rollbackd.incidents import leftovers, messages
from rollbackd.incidents.journal import Journal
from rollbackd.metrics import Metrics
from rollbackd.notify.queue import NotifyQueue
from rollbackd.plan import Step, StepContext
from rollbackd.reasons import IncidentState, StepState
from rollbackd.records import JSON, Incident, StepRecord

log = logging.getLogger(__name__)


class StepFailed(Exception):
    """A step failed for good; ``outcome`` is the incident state it leads to."""

    def __init__(self, name: str, error: str, outcome: IncidentState = IncidentState.FAILED) -> None:
        self.name = name
        self.error = error
        self.outcome = outcome
        super().__init__(f"{name}: {error}")


class StepExecutor:
    def __init__(
        self,
        *,
        journal: Journal,
        notify: NotifyQueue,
        metrics: Metrics,
        grace: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.notify = notify
        self.metrics = metrics
        self.grace = grace
        self.clock = clock

    async def execute(
        self, incident: Incident, step: Step, index: int, record: StepRecord | None, ctx: StepContext
    ) -> JSON:
        if record is not None and record.state is StepState.DONE:
            return record.output
        with logs.bound(step_name=step.name):
            if record is not None and record.state is StepState.FAILED:  # ended before the incident did
                raise StepFailed(step.name, record.error or "failed")
            attempt = 1
            if record is not None and record.state is StepState.STARTED:
                attempt = await self._resume(incident, step, index, record)
                if await self._found_done(step, ctx):
                    output: JSON = {"resumed": True, "found_done": True}
                    await self.journal.step_finished(incident.id, index, StepState.DONE, self.clock(), output, None)
                    log.info("step_found_done", extra={"step_type": step.type})
                    return output
            return await self._attempts(incident, step, index, attempt, ctx)

    async def _resume(self, incident: Incident, step: Step, index: int, record: StepRecord) -> int:
        """The attempt to go on with: the same one after an interruption, the next after a failed one."""
        if record.finished_at is not None:  # a failed attempt waiting for its retry when the daemon stopped
            return record.attempts + 1
        try:
            await leftovers.resume_interrupted(self.journal, incident, step, index, record, self.grace)
        except leftovers.Interrupted as exc:
            await self._journal(incident, step, index, self.clock(), {}, str(exc), StepState.FAILED)
            raise StepFailed(step.name, str(exc)) from exc
        return max(1, record.attempts)

    async def _found_done(self, step: Step, ctx: StepContext) -> bool:
        try:
            return await asyncio.wait_for(step.is_done(ctx), step.spec.timeout)
        except (StoreUnavailable, FencedError):
            raise
        except (RollbackdError, TimeoutError) as exc:
            log.warning("step_is_done_failed", extra={"error": str(exc)})
            return False

    async def _attempts(self, incident: Incident, step: Step, index: int, attempt: int, ctx: StepContext) -> JSON:
        limit = step.spec.retries + 1
        while True:
            if attempt > limit:
                raise StepFailed(step.name, f"gave up after {attempt - 1} attempts")
            ctx.attempt = attempt
            started = self.clock()
            await self.journal.step_started(incident.id, index, step.name, step.type, attempt, started)
            self._first_step_latency(incident, started)
            self.notify.reply(messages.step_started(incident, step.name, attempt, step.describe()))
            log.info("step_started", extra={"step_type": step.type, "attempt": attempt})
            try:
                output = await self._run(incident, step, index, attempt, ctx)
            except (StoreUnavailable, FencedError):
                raise  # the runner gives the incident up (or steps down); the step stays `started`
            except (RollbackdError, TimeoutError) as exc:
                error = _describe(exc, step.spec.timeout)
                retry = isinstance(exc, TimeoutError) or exc.retryable
                if retry and attempt < limit:
                    await self._journal(incident, step, index, started, {}, error, StepState.STARTED)
                    await asyncio.sleep(step.spec.backoff * 2 ** (attempt - 1))
                    attempt += 1
                    continue
                output = getattr(exc, "output", None) or {}  # e.g. the verdicts of a failed verification
                await self._journal(incident, step, index, started, output, error, StepState.FAILED)
                raise StepFailed(step.name, error, getattr(exc, "outcome", IncidentState.FAILED)) from exc
            except Exception as exc:  # a bug in a step must fail the incident, not the daemon
                error = f"unexpected {type(exc).__name__}: {exc}"
                log.exception("step_crashed")
                await self._journal(incident, step, index, started, {}, error, StepState.FAILED)
                raise StepFailed(step.name, error) from exc
            await self._journal(incident, step, index, started, output, None, StepState.DONE)
            return output

    async def _run(self, incident: Incident, step: Step, index: int, attempt: int, ctx: StepContext) -> JSON:
        """The step itself, with every process it starts journaled and stopped with it."""
        hook = leftovers.process_hook(self.journal, incident, index, step, attempt, self.grace)
        token = procs.spawn_hook.set(hook)
        try:
            return await asyncio.wait_for(step.run(ctx), step.spec.timeout)
        finally:
            procs.spawn_hook.reset(token)

    async def _journal(
        self,
        incident: Incident,
        step: Step,
        index: int,
        started: float,
        output: JSON,
        error: str | None,
        state: StepState,
    ) -> None:
        finished = self.clock()
        await self.journal.step_finished(incident.id, index, state, finished, output, error)
        self.metrics.step_duration.labels(incident.service, step.type).observe(finished - started)
        if state is StepState.STARTED:  # a failed attempt that will be retried
            log.warning("step_attempt_failed", extra={"error": error})
            return
        if error:
            self.metrics.step_failures.labels(incident.service, step.type).inc()
        record = StepRecord(incident.id, index, step.name, step.type, state, 0, started, finished, output, error)
        self.notify.reply(messages.step_finished(incident, record, _summary(output)))
        log.info("step_finished", extra={"state": state.value, "seconds": round(finished - started, 3), "error": error})

    def _first_step_latency(self, incident: Incident, started: float) -> None:
        received = incident.trigger.received_at
        if received is not None and not facts.ACT_LATENCY_OBSERVED.of(incident.context):
            self.metrics.act_latency.observe(max(0.0, started - received))
            facts.ACT_LATENCY_OBSERVED.put(incident.context, True)


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g}s"
    return str(exc) or type(exc).__name__


def _summary(output: JSON) -> str:
    if "summary" in output:
        return str(output["summary"])
    shown: list[str] = []
    for key, value in output.items():
        if isinstance(value, str | int | float | bool) and key not in ("stdout", "stderr", "response"):
            shown.append(f"{key}={value}")
    return ", ".join(shown[:8])
