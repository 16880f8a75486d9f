"""The `verify` plan step: run the service's checks and turn their verdicts into the incident's outcome.

All counted checks PASS: the step returns (the plan goes on: traffic restored, incident `resolved`).
Any FAIL: VerificationFailed (incident `verification_failed`). Otherwise (ERROR or INCONCLUSIVE after
their limits, or nothing counted): VerificationInconclusive (`verification_inconclusive`). In both,
the later steps do not run (traffic stays cut) and the core holds the service and escalates.

The output (and the error's text, which is what Slack shows on failure) has one line per check with
its figures; the full results are kept in the incident's context under ``verification.<step name>``,
so ``is_done`` is true only when a journaled all-pass result exists for this incident.
"""

from __future__ import annotations

from typing import ClassVar

from rollbackd import facts
from rollbackd.plan import BaseStep, StepContext, StepOptions
from rollbackd.reasons import Verdict
from rollbackd.records import JSON
from rollbackd.verify import VerificationFailed, VerificationInconclusive, overall
from rollbackd.verify.suite import VerifySuite

CONTEXT = facts.VERIFICATION


class VerifyStepOptions(StepOptions):
    only: list[str] | None = None  # names of the checks to run; default: all of services.X.verify.checks


class Verify(BaseStep):
    type: ClassVar[str] = "verify"
    Options = VerifyStepOptions
    options: VerifyStepOptions

    def describe(self) -> str:
        which = ", ".join(self.options.only) if self.options.only else "all configured checks"
        return f"verify: {which}; only all-pass gives traffic back"

    async def is_done(self, ctx: StepContext) -> bool:
        saved = (ctx.fact(CONTEXT) or {}).get(self.name) or {}
        return bool(saved.get("verdict") == Verdict.PASS.value)

    async def run(self, ctx: StepContext) -> JSON:
        suite = ctx.runtime.caps.verify
        if not isinstance(suite, VerifySuite):
            output: JSON = {"verdict": Verdict.INCONCLUSIVE.value, "summary": "no verify checks configured"}
            raise VerificationInconclusive(f"verification inconclusive: no checks configured for {ctx.service}", output)
        results = await suite.run(only=self.options.only, incident=ctx.incident, outputs=ctx.outputs)
        verdict = overall(results)
        summary = "\n".join(r.line() for r in results)
        output = {"verdict": verdict.value, "summary": summary, "results": [r.to_json() for r in results]}
        saved = ctx.fact(CONTEXT) or {}
        saved[self.name] = {"verdict": verdict.value, "attempt": ctx.attempt, "results": output["results"]}
        await ctx.remember(CONTEXT, saved)
        if verdict is Verdict.PASS:
            return output
        bad = sum(1 for r in results if r.verdict is not Verdict.PASS and not r.dry_run)
        if verdict is Verdict.FAIL:
            raise VerificationFailed(f"verification failed ({bad} of {len(results)} checks):\n{summary}", output)
        raise VerificationInconclusive(
            f"verification inconclusive ({bad} of {len(results)} checks):\n{summary}", output
        )
