"""Verification: prove the service works before traffic goes back (and gate deploys on demand).

A Verifier checks one thing and answers a CheckResult with one of four verdicts, as in Argo Rollouts'
analysis: PASS, FAIL (the service is wrong), ERROR (the check could not run: connection refused, query
failed) and INCONCLUSIVE (no data, or the judge failed). No data is never a pass.

    class Verifier(Protocol):
        name: str
        async def verify(self, ctx: VerifyContext) -> CheckResult

Verifiers are configured under ``services.<name>.verify.checks`` by ``type:`` (BACKENDS, lazy import);
``rollbackd.verify.suite`` runs them (delay, deadline, retries of ERROR/INCONCLUSIVE, dry-run), the
``verify`` plan step turns their verdicts into the incident's outcome, and ``POST /v1/verify`` runs the
same checks on demand.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Final, Protocol

from pydantic import BaseModel, ConfigDict, Field

from rollbackd.capabilities import Capabilities
from rollbackd.config import Duration
from rollbackd.errors import FatalError
from rollbackd.reasons import IncidentState, Verdict
from rollbackd.records import JSON, Incident

__all__ = [
    "BACKENDS",
    "CheckOptions",
    "CheckResult",
    "Verdict",
    "VerificationFailed",
    "VerificationInconclusive",
    "Verifier",
    "VerifyContext",
    "overall",
]

BACKENDS: Final[Mapping[str, str]] = {
    "smoke": "rollbackd.verify.smoke:SmokeVerifier",
    "counts": "rollbackd.verify.counts:CountsVerifier",
    "ragas_quick": "rollbackd.verify.ragas_quick:RagasQuickVerifier",
    "governance": "rollbackd.verify.governance:GovernanceVerifier",
    "alert_cleared": "rollbackd.verify.alert_cleared:AlertClearedVerifier",
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one verifier found. ``summary`` is one line with figures; ``details`` explains a failure
    (per-question scores, each mismatching table); ``figures`` are numbers for Slack, status and metrics."""

    verifier: str
    verdict: Verdict
    summary: str
    details: JSON = field(default_factory=dict)
    figures: dict[str, float | int | str] = field(default_factory=dict)
    type: str = ""
    attempts: int = 1
    duration_s: float = 0.0
    dry_run: bool = False  # reported, but not counted in the outcome

    def to_json(self) -> JSON:
        return {
            "verifier": self.verifier,
            "type": self.type,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "figures": dict(self.figures),
            "details": self.details,
            "attempts": self.attempts,
            "duration_s": round(self.duration_s, 3),
            "dry_run": self.dry_run,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(
            verifier=data["verifier"],
            verdict=Verdict(data["verdict"]),
            summary=data.get("summary", ""),
            details=data.get("details") or {},
            figures=data.get("figures") or {},
            type=data.get("type", ""),
            attempts=data.get("attempts", 1),
            duration_s=data.get("duration_s", 0.0),
            dry_run=data.get("dry_run", False),
        )

    def line(self) -> str:
        """``smoke: PASS 3/3 consecutive ok, p50 12ms`` - the form Slack and the CLI show."""
        mark = " (dry run, not counted)" if self.dry_run else ""
        return f"{self.verifier}: {self.verdict.value.upper()} {self.summary}{mark}"


@dataclass
class VerifyContext:
    """What a verifier may look at. ``incident`` is None for on-demand checks; ``outputs`` holds the
    outputs of the incident's finished steps by step name; ``deadline`` is a ``time.monotonic()`` value."""

    service: str
    deadline: float
    incident: Incident | None = None
    outputs: Mapping[str, JSON] = field(default_factory=dict)
    caps: Capabilities = field(default_factory=Capabilities)  # the service's handles (snapshots...)
    prometheus: Any = None  # rollbackd.prom.Prometheus | None
    store: Any = None  # rollbackd.state.StateStore | None
    service_label: str = "service"
    rollback_alerts: tuple[str, ...] = ()
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.getLogger("rollbackd.verify")
    )

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def step_output_of_type(self, step_type: str) -> JSON | None:
        """The output of the incident's step of this type (looked up by type through the plan)."""
        if self.incident is None:
            return None
        for entry in self.incident.plan:
            for spec in entry.get("parallel", [entry]):
                # a rollout's guarded step (rollout.rollback) carries the plan's step as ``step``
                if step_type in (spec.get("type"), (spec.get("step") or {}).get("type")):
                    out = self.outputs.get(spec.get("name") or step_type)
                    if out is not None:
                        return out
        return None


class CheckOptions(BaseModel):
    """Options every check has; each verifier's ``Options`` extends them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    name: str | None = None
    initial_delay: Duration = 0.0
    deadline: Duration = 60.0
    interval: Duration = 2.0  # between attempts after an ERROR or INCONCLUSIVE (and between smoke rounds)
    error_limit: Annotated[int, Field(ge=1, le=100)] = 3  # ERROR verdicts tolerated before ERROR stands
    inconclusive_limit: Annotated[int, Field(ge=1, le=100)] = 2
    dry_run: bool = False
    after: list[str] = []  # names of checks that must finish first (default: all run in parallel)

    @property
    def check_name(self) -> str:
        return self.name or self.type


class Verifier(Protocol):
    type: ClassVar[str]
    name: str
    options: CheckOptions

    def describe(self) -> str:
        """One line: what this check will look at."""
        ...

    async def verify(self, ctx: VerifyContext) -> CheckResult:
        """Check once (a verifier that waits for something, like smoke, loops until ctx.deadline).
        Never raises for a broken service or an unreachable dependency: those are FAIL and ERROR."""
        ...

    async def close(self) -> None: ...


class BaseVerifier:
    type: ClassVar[str] = ""
    Options: ClassVar[builtins.type[CheckOptions]] = CheckOptions

    def __init__(self, options: CheckOptions) -> None:
        self.options = options
        self.name = options.check_name

    def describe(self) -> str:
        return self.type

    def result(
        self,
        verdict: Verdict,
        summary: str,
        *,
        details: JSON | None = None,
        figures: Mapping[str, float | int | str] | None = None,
    ) -> CheckResult:
        return CheckResult(
            verifier=self.name,
            verdict=verdict,
            summary=summary,
            details=details or {},
            figures=dict(figures or {}),
            type=self.type,
        )

    async def close(self) -> None:
        return None


def overall(results: list[CheckResult]) -> Verdict:
    """PASS only when every counted check passed; any FAIL is FAIL; otherwise ERROR/INCONCLUSIVE are
    INCONCLUSIVE; no counted check at all is INCONCLUSIVE (no data is never a pass)."""
    counted = [r.verdict for r in results if not r.dry_run]
    if not counted:
        return Verdict.INCONCLUSIVE
    if Verdict.FAIL in counted:
        return Verdict.FAIL
    if all(v is Verdict.PASS for v in counted):
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


class VerificationFailed(FatalError):
    """A check found the service wrong: the incident ends ``verification_failed``, traffic stays cut."""

    outcome = IncidentState.VERIFICATION_FAILED

    def __init__(self, message: str, output: JSON) -> None:
        self.output = output
        super().__init__(message)


class VerificationInconclusive(FatalError):
    """No check failed but not all could prove the service works: ``verification_inconclusive``."""

    outcome = IncidentState.VERIFICATION_INCONCLUSIVE

    def __init__(self, message: str, output: JSON) -> None:
        self.output = output
        super().__init__(message)
