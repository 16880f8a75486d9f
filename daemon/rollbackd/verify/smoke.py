"""`type: smoke`: HTTP requests from config, retried until the deadline.

A round sends every request in order; a round passes when each answers the expected status, JSON
fields (dotted paths: a value to equal, or ``expect_fields`` for mere presence) or text, within its
latency budget. The first ``warmup`` rounds are not judged (cold-start outliers); then ``consecutive``
passing rounds in a row are needed (a cut-over blip is not a failure). Verdicts: PASS; FAIL with the
last failure (status, field, text or latency) at the deadline; ERROR when the service never answered
(connection refused, timeouts) during the whole time.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rollbackd.config import Duration
from rollbackd.reasons import Verdict
from rollbackd.verify import BaseVerifier, CheckOptions, CheckResult, VerifyContext
from rollbackd.verify.common import MISSING, Reply, Unreachable, call, lookup, ms, parse_path, percentile, session
from rollbackd.verify.common import short as shorten


class SmokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    method: Literal["GET", "POST", "PUT", "HEAD", "PATCH", "DELETE"] = "GET"
    url: Annotated[str, Field(pattern=r"^https?://")]
    headers: dict[str, str] = {}
    json_body: Any = Field(default=None, alias="json")
    body: str | None = None
    expect_status: int | list[int] = 200
    expect_json: dict[str, Any] = {}  # dotted path -> expected value
    expect_fields: list[str] = []  # dotted paths that must be present (any value)
    expect_text: str | None = None  # a substring of the body
    latency_budget: Duration | None = None
    timeout: Duration = 10.0

    @field_validator("expect_fields")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        for path in v:
            parse_path(path)
        return v

    @field_validator("expect_json")
    @classmethod
    def _json_paths(cls, v: dict[str, Any]) -> dict[str, Any]:
        for path in v:
            parse_path(path)
        return v

    @property
    def label(self) -> str:
        return self.name or f"{self.method} {self.url}"


class SmokeOptions(CheckOptions):
    requests: Annotated[list[SmokeRequest], Field(min_length=1)]
    warmup: Annotated[int, Field(ge=0, le=100)] = 1
    consecutive: Annotated[int, Field(ge=1, le=100)] = 3
    deadline: Duration = 60.0
    interval: Duration = 1.0


def _judge_json(req: SmokeRequest, reply: Reply) -> str | None:
    body = reply.json()
    if body is MISSING:
        return f"{req.label}: the body is not JSON: {shorten(reply.text, 80)}"
    for path in req.expect_fields:
        if lookup(body, path) is MISSING:
            return f"{req.label}: field {path} is missing"
    for path, expected in req.expect_json.items():
        got = lookup(body, path)
        if got is MISSING:
            return f"{req.label}: field {path} is missing (expected {expected!r})"
        if got != expected:
            return f"{req.label}: field {path} is {shorten(repr(got), 60)}, expected {expected!r}"
    return None


def judge(req: SmokeRequest, reply: Reply) -> str | None:
    """Why this reply is wrong, or None when it is right."""
    wanted = req.expect_status if isinstance(req.expect_status, list) else [req.expect_status]
    if reply.status not in wanted:
        return f"{req.label}: HTTP {reply.status} (expected {'/'.join(map(str, wanted))}): {shorten(reply.text, 80)}"
    if req.expect_json or req.expect_fields:
        failure = _judge_json(req, reply)
        if failure:
            return failure
    if req.expect_text is not None and req.expect_text not in reply.text:
        return f"{req.label}: the body does not contain {req.expect_text!r}"
    if req.latency_budget is not None and reply.seconds > req.latency_budget:
        return f"{req.label}: took {ms(reply.seconds)}ms, over the {ms(req.latency_budget)}ms budget"
    return None


class SmokeVerifier(BaseVerifier):
    type: ClassVar[str] = "smoke"
    Options = SmokeOptions
    options: SmokeOptions

    def describe(self) -> str:
        reqs = ", ".join(r.label for r in self.options.requests)
        return f"smoke: {reqs}; {self.options.consecutive} consecutive passes after {self.options.warmup} warm-up"

    async def _round(self, http: aiohttp.ClientSession, latencies: list[float] | None) -> tuple[str | None, bool]:
        """(failure or None, whether every request got an HTTP answer)."""
        for req in self.options.requests:
            try:
                reply = await call(
                    http,
                    req.method,
                    req.url,
                    timeout=req.timeout,
                    headers=req.headers,
                    json_body=req.json_body,
                    data=req.body,
                )
            except Unreachable as exc:
                return str(exc), False
            if latencies is not None:
                latencies.append(reply.seconds)
            failure = judge(req, reply)
            if failure:
                return failure, True
        return None, True

    async def verify(self, ctx: VerifyContext) -> CheckResult:
        opts = self.options
        latencies: list[float] = []
        rounds = passes = streak = answered = 0
        last_failure: str | None = None  # of a measured round
        warm_failure: str | None = None
        async with session() as http:
            while streak < opts.consecutive:
                measuring = rounds >= opts.warmup
                failure, got_answer = await self._round(http, latencies if measuring else None)
                rounds += 1
                answered += got_answer
                if measuring:
                    passes += failure is None
                    streak = streak + 1 if failure is None else 0
                    last_failure = failure or last_failure
                else:
                    warm_failure = failure or warm_failure
                if streak < opts.consecutive:
                    if ctx.remaining() <= opts.interval:
                        break
                    await asyncio.sleep(opts.interval)
        measured = rounds - min(rounds, opts.warmup)
        figures: dict[str, float | int | str] = {
            "attempts": measured,
            "successes": passes,
            "warmup": min(rounds, opts.warmup),
            "p50_ms": ms(percentile(latencies, 50)),
            "max_ms": ms(max(latencies, default=0.0)),
        }
        tail = f"p50 {figures['p50_ms']}ms, max {figures['max_ms']}ms"
        details = {"last_failure": last_failure or warm_failure, "rounds": rounds}
        if streak >= opts.consecutive:
            return self.result(
                Verdict.PASS,
                f"{streak}/{opts.consecutive} consecutive rounds ok ({passes}/{measured} rounds), {tail}",
                figures=figures,
            )
        if answered == 0:
            return self.result(
                Verdict.ERROR,
                f"no answer in {rounds} rounds: {last_failure or warm_failure}",
                details=details,
                figures=figures,
            )
        if last_failure is None:
            return self.result(
                Verdict.INCONCLUSIVE,
                f"the deadline ended after {measured} measured rounds ({opts.consecutive} consecutive needed)",
                details=details,
                figures=figures,
            )
        return self.result(
            Verdict.FAIL,
            f"{last_failure} ({passes}/{measured} rounds ok, {opts.consecutive} consecutive needed), {tail}",
            details=details,
            figures=figures,
        )
