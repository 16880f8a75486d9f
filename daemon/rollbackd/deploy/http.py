"""``type: http``: ask a CD system to deploy (e.g. a pipeline dispatch): one request whose URL and
JSON body are templates (``{version}``, ``{image}``, ``{digest}``, ``{incident}`` in any string), then
health by URL. ``current_url`` (optional) answers JSON whose ``current_field`` is the running version.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from rollbackd.config import Duration
from rollbackd.deploy import DeployedRelease, DeployOptions, RedeployByUrl, release_values, render
from rollbackd.errors import BackendError
from rollbackd.records import JSON, Release


class HttpDeployer(RedeployByUrl):
    backend = "deploy http"

    class Options(DeployOptions):
        url: str
        method: Literal["POST", "PUT", "PATCH"] = "POST"
        headers: dict[str, str] = {}
        body: Any = None
        expect_status: list[int] = [200, 201, 202, 204]
        timeout: Duration = 30.0
        current_url: str | None = None
        current_field: str = "version"

    def __init__(self, options: Options) -> None:
        self.options = options

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.options.timeout), headers=self.options.headers
        )

    async def current(self) -> DeployedRelease:
        if not self.options.current_url:
            return DeployedRelease(version=None)
        try:
            async with self._session() as session, session.get(self.options.current_url) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BackendError("deploy http", f"{self.options.current_url}: {exc}", retryable=True) from exc
        value: Any = body
        for part in self.options.current_field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return DeployedRelease(version=str(value) if value is not None else None)

    async def deploy(self, release: Release, *, incident: str) -> JSON:
        current = await self.current()
        if current.version is not None and current.matches(release):
            return {"noop": True, "version": release.version}
        values = release_values(release, incident)
        url = render(self.options.url, {k: quote(v, safe="") for k, v in values.items()})  # a version is data
        body = render(self.options.body, values)
        try:
            async with self._session() as session, session.request(self.options.method, url, json=body) as resp:
                text = (await resp.text())[:1000]
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError("deploy http", f"{self.options.method} {url}: {exc}", retryable=True) from exc
        if status not in self.options.expect_status:
            raise BackendError(
                "deploy http", f"{self.options.method} {url} answered {status}: {text[:300]}", retryable=status >= 500
            )
        return {"noop": False, "version": release.version, "status": status, "response": text}
