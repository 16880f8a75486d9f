"""What every check reads: the settings, one HTTP session, and the answers of Prometheus,
Alertmanager and the daemon, each fetched once (rules, targets, status) and shared by the checks.

A dependency that did not answer is remembered in ``down``; later checks that need it raise
``Skipped`` through ``need()`` and show as SKIP, so one outage is one FAIL, not ten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from rollbackd.config import Settings, split_listen
from rollbackd.errors import BackendError

WEBHOOK_PATH = "/v1/webhook/alertmanager"


class Skipped(Exception):
    """A check cannot run because a dependency it needs failed earlier."""


@dataclass
class Context:
    settings: Settings
    session: aiohttp.ClientSession
    send_test_alert: bool = False
    test_timeout: float = 60.0
    down: dict[str, str] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    # ---- where things are --------------------------------------------------------------------------
    @property
    def daemon_url(self) -> str:
        host, port = split_listen(self.settings.listen)
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    @property
    def webhook_url(self) -> str:
        return self.daemon_url + WEBHOOK_PATH

    @property
    def api_token(self) -> str:
        return self.settings.auth.api_tokens[0].token.get_secret_value()

    @property
    def webhook_token(self) -> str:
        return self.settings.auth.webhook_token.get_secret_value()

    def need(self, *backends: str) -> None:
        for backend in backends:
            if backend in self.down:
                raise Skipped(f"{backend} did not answer ({self.down[backend]})")

    # ---- HTTP ----------------------------------------------------------------------------------------
    async def request(
        self,
        backend: str,
        method: str,
        url: str,
        *,
        token: str | None = None,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """Status and decoded body (JSON when it parses, else text); BackendError when unreachable."""
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        limit = aiohttp.ClientTimeout(total=timeout) if timeout else None
        try:
            async with self.session.request(
                method, url, headers=headers, json=body, params=params, timeout=limit
            ) as resp:
                raw = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BackendError(backend, f"{url}: {type(exc).__name__}: {exc}".rstrip(": "), retryable=True) from exc
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw

    async def get_ok(
        self,
        backend: str,
        url: str,
        *,
        token: str | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        status, body = await self.request(backend, "GET", url, token=token, params=params, timeout=timeout)
        if status != 200:
            raise BackendError(backend, f"GET {url} answered {status}: {str(body)[:200]}")
        return body

    # ---- Prometheus ----------------------------------------------------------------------------------
    def _prom_token(self) -> str | None:
        cfg = self.settings.prometheus
        return cfg.bearer_token.get_secret_value() if cfg and cfg.bearer_token else None

    async def prom(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET /api/v1/<path> of the configured Prometheus: its ``data``."""
        self.need("prometheus")
        cfg = self.settings.prometheus
        if cfg is None:
            raise Skipped("prometheus.url is not set")
        body = await self.get_ok(
            "prometheus",
            f"{cfg.url.rstrip('/')}/api/v1/{path}",
            token=self._prom_token(),
            params=params,
            timeout=cfg.timeout,
        )
        if not isinstance(body, dict) or body.get("status") != "success":
            raise BackendError("prometheus", f"/api/v1/{path}: {str(body)[:200]}")
        return body.get("data")

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.prom("query", {"query": expr})
        result: list[dict[str, Any]] = list(data.get("result") or []) if isinstance(data, dict) else []
        return result

    async def cached(self, key: str, fetch: Any) -> Any:
        if key not in self.cache:
            self.cache[key] = await fetch()
        return self.cache[key]

    async def rule_groups(self) -> list[dict[str, Any]]:
        data = await self.cached("rules", lambda: self.prom("rules"))
        return list(data.get("groups") or [])

    async def rule_labels(self) -> dict[str, dict[str, str]]:
        """Alert rule name -> the labels the rule adds (severity, team: what Alertmanager routes on)."""
        try:
            groups = await self.rule_groups()
        except (BackendError, Skipped):
            return {}
        return {
            r["name"]: dict(r.get("labels") or {})
            for g in groups
            for r in g.get("rules", [])
            if r.get("type") == "alerting"
        }

    async def targets(self) -> list[dict[str, Any]]:
        data = await self.cached("targets", lambda: self.prom("targets", {"state": "active"}))
        return list(data.get("activeTargets") or [])

    # ---- Alertmanager and the daemon ---------------------------------------------------------------
    async def alertmanager(self, path: str) -> Any:
        self.need("alertmanager")
        cfg = self.settings.alertmanager
        if cfg is None:
            raise Skipped("alertmanager.url is not set")
        token = cfg.bearer_token.get_secret_value() if cfg.bearer_token else None
        return await self.get_ok(
            "alertmanager", f"{cfg.url.rstrip('/')}/api/v2/{path}", token=token, timeout=cfg.timeout
        )

    async def daemon(self, path: str) -> Any:
        self.need("rollbackd")
        return await self.get_ok("rollbackd", self.daemon_url + path, token=self.api_token)

    async def daemon_status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.cached("status", lambda: self.daemon("/v1/status"))
        return status

    async def service_status(self, service: str) -> dict[str, Any]:
        services: dict[str, Any] = (await self.daemon_status()).get("services") or {}
        return dict(services.get(service) or {})
