"""`type: alert_cleared`: the alert that opened the incident has cleared, and stays clear, by
Prometheus's own account of the service as it is now: the proof that the rollback fixed the problem.

Polled every ``interval`` until the deadline. A poll counts as clear only when all hold, asked in this
order: the alert's rule is loaded, healthy and was evaluated after the check started (``rule_evaluated``);
``ALERTS{alertname=..., <service_label>=..., alertstate="firing"}`` is empty; and every ``evidence``
expression (default ``up{selector} == 1``: the service's own target is scraped and up) has a sample
younger than ``max_sample_age``. An alert that is not firing because its rule has no data proves
nothing. Once clear, it must stay clear for ``stable_for``: firing again inside that window is FAIL.

At the deadline: still firing is FAIL; Prometheus unreachable, slow or answering 5xx is ERROR (never
"still firing"); no fresh evidence, no evaluation, or clear but not yet for ``stable_for`` is
INCONCLUSIVE. A resolved notification from Alertmanager is only a hint (shown in the details): it may be
stale, the alert may have fired again since. Without Prometheus there is no proof: INCONCLUSIVE.

An incident with no alert (manual) has nothing to clear: INCONCLUSIVE, since no data is never a
pass, unless ``skip_without_alert: true`` (then PASS, saying so). On demand (no incident) it checks
that none of the service's rollback alerts fires now, with the same fresh evidence.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import ClassVar

from pydantic import field_validator, model_validator

from rollbackd.config import Duration
from rollbackd.errors import BackendError
from rollbackd.prom import promql_string, selector
from rollbackd.reasons import Verdict
from rollbackd.verify import BaseVerifier, CheckOptions, CheckResult, VerifyContext
from rollbackd.verify.evidence import render, rule_not_evaluated, stale_series


class AlertClearedOptions(CheckOptions):
    deadline: Duration = 300.0
    interval: Duration = 5.0
    skip_without_alert: bool = False
    use_prometheus: bool = True  # false: nothing can prove it cleared, the verdict is INCONCLUSIVE
    use_webhook: bool = True  # resolved notifications, as a hint in the details
    stable_for: Duration = 30.0  # clear this long, or a re-fire within it is caught
    evidence: list[str] = ["up{selector} == 1"]
    max_sample_age: Duration = 60.0
    rule_evaluated: bool = True

    @field_validator("evidence")
    @classmethod
    def _own_series(cls, v: list[str]) -> list[str]:
        for expr in v:
            if "{selector}" not in expr:
                raise ValueError(f"{expr!r} must select the service's own series with {{selector}}")
        return v

    @model_validator(mode="after")
    def _window(self) -> AlertClearedOptions:
        if self.stable_for >= self.deadline:
            raise ValueError(f"stable_for {self.stable_for:g}s must be shorter than deadline {self.deadline:g}s")
        return self


@dataclass(frozen=True, slots=True)
class Poll:
    state: str  # clear | firing | no_evidence | error
    detail: str


AT_DEADLINE = {
    "firing": Verdict.FAIL,
    "error": Verdict.ERROR,
    "no_evidence": Verdict.INCONCLUSIVE,
    "clear": Verdict.INCONCLUSIVE,
}


class AlertClearedVerifier(BaseVerifier):
    type: ClassVar[str] = "alert_cleared"
    Options = AlertClearedOptions
    options: AlertClearedOptions

    def describe(self) -> str:
        return (
            f"alert_cleared: the triggering alert is not firing in Prometheus, on fresh samples of the "
            f"service, for {self.options.stable_for:g}s"
        )

    async def verify(self, ctx: VerifyContext) -> CheckResult:
        if ctx.incident is None:
            return await self._on_demand(ctx)
        trig = ctx.incident.trigger
        if not trig.alertname:
            if self.options.skip_without_alert:
                return self.result(Verdict.PASS, "no alert to clear (manual incident; skip_without_alert: true)")
            return self.result(Verdict.INCONCLUSIVE, f"no alert to clear: the incident was opened by {trig.kind}")
        hint = await self._hint(ctx)
        if not self.options.use_prometheus or ctx.prometheus is None:
            return self.result(
                Verdict.INCONCLUSIVE,
                f"cannot tell whether {trig.alertname} cleared: no Prometheus "
                "to ask (a resolved notification is only a hint)",
                details={"hint": hint},
            )
        return await self._watch(ctx, trig.alertname, hint)

    async def _watch(self, ctx: VerifyContext, alertname: str, hint: str) -> CheckResult:
        since = await self._prometheus_now(ctx)
        polls, cleared_at = 0, None
        while True:
            polls += 1
            poll = await self._poll(ctx, alertname, since)
            figures: dict[str, float | int | str] = {"polls": polls}
            if cleared_at is not None and poll.state == "firing":
                return self.result(
                    Verdict.FAIL,
                    f"{alertname} fired again {time.monotonic() - cleared_at:.0f}s "
                    f"after clearing (within stable_for {self.options.stable_for:g}s)",
                    details={"hint": hint},
                    figures=figures,
                )
            if poll.state != "clear":  # clear means continuously clear: a gap in the evidence starts over
                cleared_at = None
            elif cleared_at is None:
                cleared_at = time.monotonic()
            if poll.state == "clear" and time.monotonic() - (cleared_at or 0) >= self.options.stable_for:
                return self.result(
                    Verdict.PASS,
                    f"{alertname} cleared and stayed clear for "
                    f"{self.options.stable_for:g}s ({poll.detail}) after {polls} polls",
                    details={"hint": hint},
                    figures=figures,
                )
            if ctx.remaining() <= self.options.interval:
                return self._at_deadline(alertname, poll, cleared_at, hint, figures)
            await asyncio.sleep(self.options.interval)

    def _at_deadline(
        self, alertname: str, poll: Poll, cleared_at: float | None, hint: str, figures: dict[str, float | int | str]
    ) -> CheckResult:
        verdict = AT_DEADLINE[poll.state]
        polls = figures["polls"]
        if poll.state == "firing":
            text = f"{alertname} still firing after {polls} polls ({poll.detail})"
        elif poll.state == "error":
            text = f"could not tell whether {alertname} cleared: {poll.detail}"
        elif poll.state == "clear":
            held = time.monotonic() - (cleared_at or time.monotonic())
            text = (
                f"{alertname} clear for only {held:.0f}s of stable_for {self.options.stable_for:g}s before the deadline"
            )
        else:
            text = f"cannot tell whether {alertname} cleared: {poll.detail}"
        return self.result(verdict, text, details={"hint": hint, "last_poll": poll.detail}, figures=figures)

    async def _prometheus_now(self, ctx: VerifyContext) -> float:
        """Prometheus's clock (rule evaluation times are its own); the local one if it does not answer."""
        try:
            now = await ctx.prometheus.scalar("time()")
        except BackendError:
            now = None
        return float(now) if now is not None else time.time()

    async def _poll(self, ctx: VerifyContext, alertname: str, since: float) -> Poll:
        assert ctx.incident is not None
        prom = ctx.prometheus
        service = ctx.incident.trigger.labels.get(ctx.service_label, ctx.service)
        try:
            if self.options.rule_evaluated:
                missing = await rule_not_evaluated(prom, alertname, since)
                if missing:
                    return Poll("no_evidence", missing)
            firing = await prom.query(
                selector("ALERTS", {ctx.service_label: service, "alertname": alertname, "alertstate": "firing"})
            )
            if firing:
                return Poll("firing", "Prometheus ALERTS shows it firing")
            exprs = [render(e, ctx.service_label, service) for e in self.options.evidence]
            missing = await stale_series(prom, exprs, self.options.max_sample_age)
        except BackendError as exc:
            return Poll("error", f"Prometheus: {exc}")
        if missing:
            return Poll("no_evidence", missing)
        return Poll("clear", "Prometheus ALERTS shows it not firing, on fresh samples")

    async def _hint(self, ctx: VerifyContext) -> str:
        """What Alertmanager said last about this alert since the incident opened (a hint, never proof)."""
        assert ctx.incident is not None
        trig = ctx.incident.trigger
        if not (self.options.use_webhook and ctx.store is not None and trig.fingerprint):
            return "no notification looked at"
        try:
            rows = await ctx.store.recent_alerts(ctx.service, 200)
        except Exception as exc:  # a hint is not worth an ERROR
            return f"notifications unreadable: {exc}"
        mine = [
            r
            for r in rows
            if r.get("fingerprint") == trig.fingerprint and float(r.get("received_at") or 0) >= ctx.incident.created_at
        ]
        if not mine:
            return "no notification since the incident opened"
        latest = max(mine, key=lambda r: float(r.get("received_at") or 0))
        return f"latest notification since the incident opened: {latest.get('status')}"

    async def _on_demand(self, ctx: VerifyContext) -> CheckResult:
        if ctx.prometheus is None:
            return self.result(Verdict.INCONCLUSIVE, "no incident and no Prometheus: nothing to look at")
        if not ctx.rollback_alerts:
            return self.result(Verdict.INCONCLUSIVE, "no incident and no rollback alerts configured")
        names = "|".join(_regex_escape(a) for a in ctx.rollback_alerts)
        expr = (
            f'ALERTS{{{ctx.service_label}={promql_string(ctx.service)},alertstate="firing",'
            f"alertname=~{promql_string(names)}}}"
        )
        try:
            firing = await ctx.prometheus.query(expr)
            names_firing = sorted({str(s.get("metric", {}).get("alertname")) for s in firing})
            exprs = [render(e, ctx.service_label, ctx.service) for e in self.options.evidence]
            missing = None if names_firing else await stale_series(ctx.prometheus, exprs, self.options.max_sample_age)
        except BackendError as exc:
            return self.result(Verdict.ERROR, f"Prometheus: {exc}")
        if names_firing:
            return self.result(
                Verdict.FAIL,
                f"rollback alerts firing now: {', '.join(names_firing)}",
                figures={"firing": len(names_firing)},
            )
        if missing:
            return self.result(
                Verdict.INCONCLUSIVE, f"none of the rollback alerts fires, but {missing}", figures={"firing": 0}
            )
        return self.result(
            Verdict.PASS,
            f"none of {len(ctx.rollback_alerts)} rollback alerts firing, on fresh samples of the service",
            figures={"firing": 0},
        )


def _regex_escape(pattern: str) -> str:
    """A policy name or glob (``RAG*``) as an RE2 alternative: ``*`` -> ``.*``, ``?`` -> ``.``."""
    out = []
    for c in pattern:
        out.append(".*" if c == "*" else "." if c == "?" else "\\" + c if c in r".^$+()[]{}|\\" else c)
    return "".join(out)
