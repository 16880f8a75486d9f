"""Prometheus HTTP API: is an alert still firing, and instant queries (baselines)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from rollbackd.errors import BackendError


def promql_string(value: str) -> str:
    """A label value as a PromQL double-quoted string: data, escaped, never code."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def selector(metric: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f"{name}={promql_string(value)}" for name, value in sorted(labels.items()))
    return f"{metric}{{{inner}}}"


class Prometheus:
    def __init__(self, url: str, *, timeout: float = 5.0, bearer_token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), headers=self._headers
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _api(self, method: str, path: str, **kw: Any) -> Any:
        """The ``data`` of a Prometheus API answer. BackendError (retryable for 5xx and transport errors)
        names the endpoint and Prometheus's message: unreachable, slow, 5xx and garbage all land here."""
        endpoint = f"{self.url}{path}"
        try:
            async with self._client().request(method, endpoint, **kw) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BackendError("prometheus", f"{endpoint}: {type(exc).__name__}: {exc}", retryable=True) from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else str(body)[:200]
            raise BackendError("prometheus", f"{endpoint}: HTTP {resp.status}: {error}", retryable=resp.status >= 500)
        return body.get("data") or {}

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the vector. BackendError names the endpoint and Prometheus's message."""
        data = await self._api("POST", "/api/v1/query", data={"query": expr})
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data.get("result") or []
        return result

    async def alert_rules(self, name: str) -> list[dict[str, Any]]:
        """The loaded alerting rules called ``name`` (every group), with health and lastEvaluation."""
        data = await self._api("GET", "/api/v1/rules", params={"type": "alert"})
        return [
            rule for group in data.get("groups") or [] for rule in group.get("rules") or [] if rule.get("name") == name
        ]

    async def scalar(self, expr: str) -> float | None:
        """The single value of a query, or None when it returns no series."""
        result = await self.query(expr)
        if not result:
            return None
        return float(result[0]["value"][1])

    async def alert_firing(self, alertname: str, labels: Mapping[str, str]) -> bool:
        sel = selector("ALERTS", {**labels, "alertname": alertname, "alertstate": "firing"})
        return bool(await self.query(sel))
