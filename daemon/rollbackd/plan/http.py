"""`type: http`: one HTTP request (a load balancer's admin API, a CD pipeline, a feature flag).
``body`` is a text template and ``json`` a structure whose strings are templates; fields are
``$incident_id``, ``$service``, ``$alertname``, ``$label_<name>``, ``$target_version``... Values are
substituted as data (JSON-encoded inside ``json``), never evaluated."""

from __future__ import annotations

from string import Template
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import model_validator

from rollbackd.errors import FatalError, RetryableError
from rollbackd.plan import BaseStep, StepContext, StepOptions
from rollbackd.records import JSON

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class HttpCheck(StepOptions):
    method: Method = "GET"
    url: str
    expect_status: list[int] = [200]


class HttpOptions(StepOptions):
    method: Method = "POST"
    url: str
    headers: dict[str, str] = {}
    body: str | None = None
    json_body: Any = None
    expect_status: list[int] = [200, 201, 202, 204]
    check: HttpCheck | None = None

    @model_validator(mode="after")
    def _one_body(self) -> HttpOptions:
        if self.body is not None and self.json_body is not None:
            raise ValueError("give `body` or `json_body`, not both")
        return self


def render(value: Any, fields: dict[str, str]) -> Any:
    if isinstance(value, str):
        return Template(value).safe_substitute(fields)
    if isinstance(value, list):
        return [render(v, fields) for v in value]
    if isinstance(value, dict):
        return {k: render(v, fields) for k, v in value.items()}
    return value


async def request(
    method: str, url: str, *, timeout: float, headers: dict[str, str] | None = None,
    data: str | None = None, json: Any = None,
) -> tuple[int, str]:
    """One request; connection errors and 5xx are retryable, the rest is the caller's to judge."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.request(method, url, headers=headers, data=data, json=json) as resp:
            text = await resp.text(errors="replace")
            return resp.status, text[:2000]
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RetryableError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc


class HttpStep(BaseStep):
    type: ClassVar[str] = "http"
    Options = HttpOptions
    options: HttpOptions

    def describe(self) -> str:
        return f"{self.options.method} {self.options.url}"

    async def is_done(self, ctx: StepContext) -> bool:
        check = self.options.check
        if check is None:
            return False
        fields = ctx.template_vars()
        status, _ = await request(check.method, render(check.url, fields), timeout=self.spec.timeout)
        return status in check.expect_status

    async def run(self, ctx: StepContext) -> JSON:
        fields = ctx.template_vars()
        url = render(self.options.url, fields)
        status, text = await request(
            self.options.method, url, timeout=self.spec.timeout,
            headers=render(self.options.headers, fields),
            data=render(self.options.body, fields) if self.options.body is not None else None,
            json=render(self.options.json_body, fields) if self.options.json_body is not None else None,
        )
        if status not in self.options.expect_status:
            error = RetryableError if status >= 500 or status == 429 else FatalError
            raise error(f"{self.options.method} {url}: HTTP {status}, expected "
                        f"{self.options.expect_status}: {text[:200]}")
        return {"status": status, "response": text[:500]}
