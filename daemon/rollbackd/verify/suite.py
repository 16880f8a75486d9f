"""A service's configured checks, run together: ``runtime.caps.verify``.

Each check waits for the checks named in its ``after``, then its ``initial_delay``, then runs against
its own deadline. FAIL and PASS are final; ERROR and INCONCLUSIVE are tried again every ``interval``
until ``error_limit`` / ``inconclusive_limit`` such verdicts or the deadline, and the last one stands
(Argo Rollouts' consecutiveErrorLimit / inconclusiveLimit). A verifier that overruns its deadline or
crashes gives ERROR. Every result is counted in ``rollbackd_verifications_total``, kept as the
service's last verification (status) and, for an incident, journaled as a ``verification`` event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from rollbackd.capabilities import Capabilities
from rollbackd.errors import PayloadError
from rollbackd.reasons import EventKind, Verdict
from rollbackd.records import JSON, Event, Incident
from rollbackd.verify import CheckResult, Verifier, VerifyContext, overall

log = logging.getLogger(__name__)
GRACE_S = 5.0  # a verifier past its deadline by this much is cut off: ERROR


def last_key(service: str) -> str:
    return f"verify.last.{service}"


class VerifySuite:
    def __init__(
        self,
        *,
        service: str,
        checks: list[Verifier],
        caps: Capabilities | None = None,
        prometheus: Any = None,
        store: Any = None,
        metrics: Any = None,
        service_label: str = "service",
        rollback_alerts: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.checks = checks
        self.caps = caps if caps is not None else Capabilities()
        self.prometheus = prometheus
        self.store = store
        self.metrics = metrics
        self.service_label = service_label
        self.rollback_alerts = rollback_alerts
        self.clock = clock
        self.grace = GRACE_S

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checks]

    def select(self, only: list[str] | None) -> list[Verifier]:
        if not only:
            return list(self.checks)
        unknown = [n for n in only if n not in self.names]
        if unknown:
            raise PayloadError("only", f"unknown check(s) {', '.join(unknown)}; configured: {', '.join(self.names)}")
        return [c for c in self.checks if c.name in only]

    def describe(self, only: list[str] | None = None) -> list[str]:
        return [c.describe() for c in self.select(only)]

    async def run(
        self,
        *,
        only: list[str] | None = None,
        incident: Incident | None = None,
        outputs: Mapping[str, JSON] | None = None,
    ) -> list[CheckResult]:
        """Run the selected checks (all by default), in parallel but for ``after``; never raises for a
        check's own failure. Results come back in configuration order."""
        chosen = self.select(only)
        finished = {c.name: asyncio.Event() for c in chosen}

        async def one(check: Verifier) -> CheckResult:
            try:
                for name in check.options.after:
                    if name in finished:
                        await finished[name].wait()
                return await self._run_check(check, incident, outputs or {})
            finally:
                finished[check.name].set()

        results = list(await asyncio.gather(*(one(c) for c in chosen)))
        await self._record(results, incident)
        return results

    async def _run_check(self, check: Verifier, incident: Incident | None, outputs: Mapping[str, JSON]) -> CheckResult:
        opts = check.options
        if opts.initial_delay > 0:
            await asyncio.sleep(opts.initial_delay)
        started = time.monotonic()
        deadline = started + opts.deadline
        counts = {Verdict.ERROR: 0, Verdict.INCONCLUSIVE: 0}
        limits = {Verdict.ERROR: opts.error_limit, Verdict.INCONCLUSIVE: opts.inconclusive_limit}
        attempts = 0
        while True:
            attempts += 1
            result = await self._attempt(check, incident, outputs, deadline)
            if result.verdict in counts:
                counts[result.verdict] += 1
            if (
                result.verdict not in counts
                or counts[result.verdict] >= limits[result.verdict]
                or deadline - time.monotonic() <= opts.interval
            ):
                break
            log.info(
                "verify_retry", extra={"check": check.name, "verdict": result.verdict.value, "summary": result.summary}
            )
            await asyncio.sleep(opts.interval)
        return dataclasses.replace(
            result, attempts=attempts, duration_s=time.monotonic() - started, dry_run=opts.dry_run, type=check.type
        )

    async def _attempt(
        self, check: Verifier, incident: Incident | None, outputs: Mapping[str, JSON], deadline: float
    ) -> CheckResult:
        ctx = VerifyContext(
            service=self.service,
            deadline=deadline,
            incident=incident,
            outputs=outputs,
            caps=self.caps,
            prometheus=self.prometheus,
            store=self.store,
            service_label=self.service_label,
            rollback_alerts=self.rollback_alerts,
        )
        try:
            return await asyncio.wait_for(check.verify(ctx), max(0.1, deadline - time.monotonic()) + self.grace)
        except TimeoutError:
            return CheckResult(
                check.name,
                Verdict.ERROR,
                f"did not finish within its {check.options.deadline:g}s deadline",
                type=check.type,
            )
        except Exception as exc:  # a bug in a verifier is an ERROR of that check, not a crash of the step
            log.exception("verifier_crashed", extra={"check": check.name})
            return CheckResult(
                check.name, Verdict.ERROR, f"verifier crashed: {type(exc).__name__}: {exc}", type=check.type
            )

    async def _record(self, results: list[CheckResult], incident: Incident | None) -> None:
        """Metrics, the last verification (status) and journal events; a failure here is logged only."""
        if self.metrics is not None:
            for r in results:
                self.metrics.verdict(self.service, r.verifier, r.verdict)
        if self.store is None:
            return
        try:
            await self.store.set_kv(last_key(self.service), await self._merged_last(results, incident))
            for r in results if incident is not None else ():
                assert incident is not None
                await self.store.append_event(
                    Event(
                        kind=EventKind.VERIFICATION,
                        service=self.service,
                        incident_id=incident.id,
                        verdict=r.verdict.value,
                        actor="rollbackd",
                        data={"sentence": r.line(), "verifier": r.verifier, "figures": r.figures},
                    )
                )
        except Exception:
            log.exception("verify_record_failed")

    async def _merged_last(self, results: list[CheckResult], incident: Incident | None) -> JSON:
        """The service's last verification. An incident verifies in more than one step (alert_cleared runs
        last, after traffic is back): its results are merged per verifier, so status shows them all."""
        merged = {r.verifier: r for r in results}
        previous = await self.store.get_kv(last_key(self.service)) if incident is not None else None
        if incident is not None and previous and previous.get("incident_id") == incident.id:
            for old in previous.get("results") or []:
                merged.setdefault(old["verifier"], CheckResult.from_json(old))
        ordered = sorted(
            merged.values(), key=lambda r: self.names.index(r.verifier) if r.verifier in self.names else len(self.names)
        )
        return {
            "at": self.clock(),
            "incident_id": incident.id if incident else None,
            "verdict": overall(ordered).value,
            "results": [r.to_json() for r in ordered],
        }

    async def close(self) -> None:
        for check in self.checks:
            await check.close()
