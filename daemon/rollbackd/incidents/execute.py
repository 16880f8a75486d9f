"""One step, journaled write-ahead: recorded as started (the attempt counted) before it runs, and as
done or failed after. On resume a step the journal says is done is skipped; one that was interrupted
is asked ``is_done`` (the world may show it finished) before it runs again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from rollbackd import logs
from rollbackd.errors import RollbackdError
from rollbackd.incidents import messages
from rollbackd.metrics import Metrics
from rollbackd.notify.queue import NotifyQueue
from rollbackd.plan import Step, StepContext
from rollbackd.reasons import IncidentState, StepState
from rollbackd.records import JSON, Incident, StepRecord
from rollbackd.state import StateStore

log = logging.getLogger(__name__)


class StepFailed(Exception):
    """A step failed for good; ``outcome`` is the incident state it leads to."""

    def __init__(self, name: str, error: str, outcome: IncidentState = IncidentState.FAILED) -> None:
        self.name = name
        self.error = error
        self.outcome = outcome
        super().__init__(f"{name}: {error}")


class StepExecutor:
    def __init__(self, *, store: StateStore, notify: NotifyQueue, metrics: Metrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.notify = notify
        self.metrics = metrics
        self.clock = clock

    async def execute(self, incident: Incident, step: Step, index: int, record: StepRecord | None,
                      ctx: StepContext) -> JSON:
        if record is not None and record.state is StepState.DONE:
            return record.output
        with logs.bound(step_name=step.name):
            if record is not None and record.state is StepState.STARTED and await self._found_done(step, ctx):
                output: JSON = {"resumed": True, "found_done": True}
                await self.store.step_finished(incident.id, index, StepState.DONE, self.clock(), output, None)
                log.info("step_found_done", extra={"step_type": step.type})
                return output
            return await self._attempts(incident, step, index, record, ctx)

    async def _found_done(self, step: Step, ctx: StepContext) -> bool:
        try:
            return await asyncio.wait_for(step.is_done(ctx), step.spec.timeout)
        except (RollbackdError, TimeoutError) as exc:
            log.warning("step_is_done_failed", extra={"error": str(exc)})
            return False

    async def _attempts(self, incident: Incident, step: Step, index: int, record: StepRecord | None,
                        ctx: StepContext) -> JSON:
        attempts = record.attempts if record else 0
        # A crash mid-step used up its attempt; allow one more after a restart, but not forever.
        limit = step.spec.retries + 1 + (1 if record is not None and record.state is StepState.STARTED else 0)
        while True:
            attempts += 1
            if attempts > limit:
                raise StepFailed(step.name, f"gave up after {attempts - 1} attempts")
            ctx.attempt = attempts
            started = self.clock()
            await self.store.step_started(incident.id, index, step.name, step.type, attempts, started)
            self._first_step_latency(incident, started)
            self.notify.reply(messages.step_started(incident, step.name, attempts, step.describe()))
            log.info("step_started", extra={"step_type": step.type, "attempt": attempts})
            try:
                output = await asyncio.wait_for(step.run(ctx), step.spec.timeout)
            except (RollbackdError, TimeoutError) as exc:
                error = _describe(exc, step.spec.timeout)
                retry = isinstance(exc, TimeoutError) or exc.retryable
                if retry and attempts < limit:
                    await self._journal(incident, step, index, started, {}, error, StepState.STARTED)
                    await asyncio.sleep(step.spec.backoff * 2 ** (attempts - 1))
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

    async def _journal(self, incident: Incident, step: Step, index: int, started: float, output: JSON,
                       error: str | None, state: StepState) -> None:
        finished = self.clock()
        await self.store.step_finished(incident.id, index, state, finished, output, error)
        self.metrics.step_duration.labels(incident.service, step.type).observe(finished - started)
        if state is StepState.STARTED:  # a failed attempt that will be retried
            log.warning("step_attempt_failed", extra={"error": error})
            return
        if error:
            self.metrics.step_failures.labels(incident.service, step.type).inc()
        record = StepRecord(incident.id, index, step.name, step.type, state, 0, started, finished, output, error)
        self.notify.reply(messages.step_finished(incident, record, _summary(output)))
        log.info("step_finished", extra={"state": state.value, "seconds": round(finished - started, 3),
                                         "error": error})

    def _first_step_latency(self, incident: Incident, started: float) -> None:
        received = incident.trigger.received_at
        if received is not None and not incident.context.get("act_latency_observed"):
            self.metrics.act_latency.observe(max(0.0, started - received))
            incident.context["act_latency_observed"] = True


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


