"""``type: http``: read the weight with a GET (a JSON field, or the plain body) and set it with a
request whose URL and JSON body are templates with ``{weight}``."""

from __future__ import annotations

from typing import Any, Literal

import aiohttp

from rollbackd.config import Duration
from rollbackd.errors import BackendError
from rollbackd.traffic import TrafficOptions, check_weight


def _fill(template: Any, weight: int) -> Any:
    if isinstance(template, str):
        return weight if template == "{weight}" else template.replace("{weight}", str(weight))
    if isinstance(template, list):
        return [_fill(v, weight) for v in template]
    if isinstance(template, dict):
        return {k: _fill(v, weight) for k, v in template.items()}
    return template


class HttpTrafficSwitch:
    kind = "http"

    class Options(TrafficOptions):
        get_url: str
        weight_field: str | None = "weight"  # dotted path in the JSON answer; None: the body is the number
        set_url: str
        set_method: Literal["POST", "PUT", "PATCH"] = "PUT"
        body: Any = {"weight": "{weight}"}
        headers: dict[str, str] = {}
        timeout: Duration = 10.0

    def __init__(self, options: Options) -> None:
        self.options = options

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.options.timeout), headers=self.options.headers
        )

    async def weight(self) -> int:
        url = self.options.get_url
        try:
            async with self._session() as session, session.get(url) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError("traffic http", f"GET {url}: {exc}", retryable=True) from exc
        if status != 200:
            raise BackendError("traffic http", f"GET {url} answered {status}: {text[:200]}", retryable=status >= 500)
        value: Any = text
        if self.options.weight_field:
            import json

            try:
                value = json.loads(text)
            except ValueError as exc:
                raise BackendError("traffic http", f"GET {url}: not JSON: {text[:100]!r}") from exc
            for part in self.options.weight_field.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        return check_weight(value, "traffic http")

    async def set_weight(self, percent: int) -> None:
        url = self.options.set_url.replace("{weight}", str(percent))
        try:
            async with (
                self._session() as session,
                session.request(self.options.set_method, url, json=_fill(self.options.body, percent)) as resp,
            ):
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError("traffic http", f"{self.options.set_method} {url}: {exc}", retryable=True) from exc
        if not 200 <= status < 300:
            raise BackendError(
                "traffic http",
                f"{self.options.set_method} {url} answered {status}: {text[:200]}",
                retryable=status >= 500,
            )
