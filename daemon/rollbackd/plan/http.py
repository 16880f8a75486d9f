"""`type: http`: one HTTP request (a load balancer's admin API, a CD pipeline, a feature flag).
``body`` is a text template and ``json`` a structure whose strings are templates; fields are
``$incident_id``, ``$service``, ``$alertname``, ``$label_<name>``, ``$target_version``... Values are
substituted as data, encoded for where they land, never evaluated: percent-encoded in the URL (a
label cannot add a path segment or a query parameter), JSON values inside ``json_body`` (serialised
by the client), JSON-string-escaped in a ``body`` sent as ``application/json``, percent-encoded in a
form body; a header whose value would carry CR, LF or NUL is refused (no header injection)."""

from __future__ import annotations

import json
from string import Template
from typing import Any, ClassVar, Literal
from urllib.parse import quote, quote_plus

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


def url_fields(fields: dict[str, str]) -> dict[str, str]:
    return {k: quote(v, safe="") for k, v in fields.items()}


def body_fields(fields: dict[str, str], headers: dict[str, str]) -> dict[str, str]:
    """Field values for a text ``body``: escaped for the media type the request declares."""
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "").lower()
    if "json" in ctype:
        return {k: json.dumps(v)[1:-1] for k, v in fields.items()}  # the inside of a JSON string
    if "x-www-form-urlencoded" in ctype:
        return {k: quote_plus(v) for k, v in fields.items()}
    return fields


def render_headers(headers: dict[str, str], fields: dict[str, str]) -> dict[str, str]:
    out = render(headers, fields)
    for name, value in out.items():
        if any(c in value for c in "\r\n\x00"):
            raise FatalError(f"header {name}: a template value carries CR, LF or NUL; refused")
    return dict(out)


def render(value: Any, fields: dict[str, str]) -> Any:
    if isinstance(value, str):
        return Template(value).safe_substitute(fields)
    if isinstance(value, list):
        return [render(v, fields) for v in value]
    if isinstance(value, dict):
        return {k: render(v, fields) for k, v in value.items()}
    return value


async def request(
    method: str,
    url: str,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
    data: str | None = None,
    json: Any = None,
) -> tuple[int, str]:
    """One request; connection errors and 5xx are retryable, the rest is the caller's to judge."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.request(method, url, headers=headers, data=data, json=json) as resp,
        ):
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
        status, _ = await request(check.method, render(check.url, url_fields(fields)), timeout=self.spec.timeout)
        return status in check.expect_status

    async def run(self, ctx: StepContext) -> JSON:
        fields = ctx.template_vars()
        url = render(self.options.url, url_fields(fields))
        headers = render_headers(self.options.headers, fields)
        status, text = await request(
            self.options.method,
            url,
            timeout=self.spec.timeout,
            headers=headers,
            data=render(self.options.body, body_fields(fields, headers)) if self.options.body is not None else None,
            json=render(self.options.json_body, fields) if self.options.json_body is not None else None,
        )
        if status not in self.options.expect_status:
            error = RetryableError if status >= 500 or status == 429 else FatalError
            raise error(
                f"{self.options.method} {url}: HTTP {status}, expected {self.options.expect_status}: {text[:200]}"
            )
        return {"status": status, "response": text[:500]}
