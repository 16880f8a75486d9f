"""`type: alert_cleared`: the alert that opened the incident resolves within the deadline: the proof
that the rollback fixed the problem.

Polled every ``interval`` until the deadline; cleared when either Alertmanager sent a resolved
notification for the same fingerprint after the incident opened (the journal's alert rows), or
Prometheus ``ALERTS{alertname=..., <service_label>=..., alertstate="firing"}`` returns nothing.
Still firing at the deadline: FAIL. Prometheus unreachable and no resolved notification: ERROR.

An incident with no alert (manual) has nothing to clear: INCONCLUSIVE, since no data is never a
pass, unless ``skip_without_alert: true`` (then PASS, saying so). On demand (no incident) it checks
that none of the service's rollback alerts fires now.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from rollbackd.config import Duration
from rollbackd.errors import BackendError
from rollbackd.prom import promql_string, selector
from rollbackd.reasons import Verdict
from rollbackd.verify import BaseVerifier, CheckOptions, CheckResult, VerifyContext


class AlertClearedOptions(CheckOptions):
    deadline: Duration = 300.0
    interval: Duration = 5.0
    skip_without_alert: bool = False
    use_prometheus: bool = True
    use_webhook: bool = True


class AlertClearedVerifier(BaseVerifier):
    type: ClassVar[str] = "alert_cleared"
    Options = AlertClearedOptions
    options: AlertClearedOptions

    def describe(self) -> str:
        return "alert_cleared: the triggering alert resolves (resolved notification or Prometheus ALERTS)"

    async def verify(self, ctx: VerifyContext) -> CheckResult:
        if ctx.incident is None:
            return await self._on_demand(ctx)
        trig = ctx.incident.trigger
        if not trig.alertname:
            if self.options.skip_without_alert:
                return self.result(Verdict.PASS, "no alert to clear (manual incident; skip_without_alert: true)")
            return self.result(Verdict.INCONCLUSIVE, f"no alert to clear: the incident was opened by {trig.kind}")
        polls = 0
        last_error: str | None = None
        while True:
            polls += 1
            cleared, how, error = await self._cleared_once(ctx)
            last_error = error or last_error
            if cleared:
                return self.result(Verdict.PASS, f"{trig.alertname} cleared ({how}) after {polls} polls",
                                   figures={"polls": polls})
            if ctx.remaining() <= self.options.interval:
                break
            await asyncio.sleep(self.options.interval)
        figures: dict[str, float | int | str] = {"polls": polls}
        if how == "":  # nothing answered: Prometheus errors and no resolved notification
            return self.result(Verdict.ERROR, f"could not tell whether {trig.alertname} cleared: {last_error}",
                               figures=figures)
        return self.result(Verdict.FAIL, f"{trig.alertname} still firing after {polls} polls ({how})",
                           details={"last_error": last_error}, figures=figures)

    async def _cleared_once(self, ctx: VerifyContext) -> tuple[bool, str, str | None]:
        """(cleared, what said so or still says firing - "" when no source answered, the error if any)."""
        assert ctx.incident is not None
        trig = ctx.incident.trigger
        webhook = self.options.use_webhook and ctx.store is not None and bool(trig.fingerprint)
        if webhook:
            rows = await ctx.store.recent_alerts(ctx.service, 200)
            if any(_resolved_after(r, trig.fingerprint or "", ctx.incident.created_at) for r in rows):
                return True, "resolved notification received", None
        error = None if ctx.prometheus is not None or not self.options.use_prometheus else "no prometheus configured"
        if self.options.use_prometheus and ctx.prometheus is not None:
            labels = {ctx.service_label: trig.labels.get(ctx.service_label, ctx.service),
                      "alertname": trig.alertname or "", "alertstate": "firing"}
            try:
                firing = await ctx.prometheus.query(selector("ALERTS", labels))
            except BackendError as exc:
                error = str(exc)
            else:
                if not firing:
                    return True, "Prometheus ALERTS shows it no longer firing", None
                return False, "Prometheus ALERTS still shows it firing", None
        return False, "no resolved notification" if webhook else "", error

    async def _on_demand(self, ctx: VerifyContext) -> CheckResult:
        if ctx.prometheus is None:
            return self.result(Verdict.INCONCLUSIVE, "no incident and no Prometheus: nothing to look at")
        if not ctx.rollback_alerts:
            return self.result(Verdict.INCONCLUSIVE, "no incident and no rollback alerts configured")
        names = "|".join(_regex_escape(a) for a in ctx.rollback_alerts)
        expr = (f"ALERTS{{{ctx.service_label}={promql_string(ctx.service)},alertstate=\"firing\","
                f"alertname=~{promql_string(names)}}}")
        try:
            firing = await ctx.prometheus.query(expr)
        except BackendError as exc:
            return self.result(Verdict.ERROR, f"Prometheus: {exc}")
        names_firing = sorted({str(s.get("metric", {}).get("alertname")) for s in firing})
        if names_firing:
            return self.result(Verdict.FAIL, f"rollback alerts firing now: {', '.join(names_firing)}",
                               figures={"firing": len(names_firing)})
        return self.result(Verdict.PASS, f"none of {len(ctx.rollback_alerts)} rollback alerts firing",
                           figures={"firing": 0})


def _resolved_after(row: dict[str, Any], fingerprint: str, since: float) -> bool:
    return (row.get("fingerprint") == fingerprint and row.get("status") == "resolved"
            and float(row.get("received_at") or 0) >= since)


def _regex_escape(pattern: str) -> str:
    """A policy name or glob (``RAG*``) as an RE2 alternative: ``*`` -> ``.*``, ``?`` -> ``.``."""
    out = []
    for c in pattern:
        out.append(".*" if c == "*" else "." if c == "?" else "\\" + c if c in r".^$+()[]{}|\\" else c)
    return "".join(out)
