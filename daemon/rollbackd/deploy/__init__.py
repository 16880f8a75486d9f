"""Code rollback: put a release's code back, and tell what runs now.

    class Deployer(Protocol):
        async def current(self) -> DeployedRelease              what runs now (image id, version)
        async def deploy(self, release, *, incident) -> JSON    idempotent: a no-op when it already runs
        async def wait_healthy(self, deadline) -> None          HTTP health until a monotonic deadline
        async def roll_forward(self, of_incident, release, *, incident) -> JSON   undo a revert

Backends by config ``type:`` (BACKENDS): ``docker`` (Docker Engine or Podman's Docker API: recreate the
named containers from the release's image, keep the replaced one stopped as ``<name>__pre_<incident>``),
``command`` (argv templates, no shell), ``http`` (a CD system's API, e.g. a pipeline dispatch). Every
backend judges health by an HTTP URL (Podman leaves a container's healthcheck status at ``starting``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from rollbackd.config import Duration
from rollbackd.errors import BackendError
from rollbackd.records import JSON, Release
from rollbackd.scheduler import Schedule

BACKENDS: Final = {
    "docker": "rollbackd.deploy.docker:DockerDeployer",
    "command": "rollbackd.deploy.command:CommandDeployer",
    "http": "rollbackd.deploy.http:HttpDeployer",
}
TEMPLATE_KEYS: Final = ("version", "image", "digest", "incident")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaselineOptions(_Strict):
    """How the latency baseline of a green release is measured. ``$service`` and ``$window`` in
    ``expr`` become the quoted service name and the window; ``recording_rule`` is averaged over it."""

    expr: str | None = None
    recording_rule: str | None = None
    window: Duration = 1800.0
    label: str = "service"
    refresh: Schedule | None = Schedule(interval=3600.0)


class DeployOptions(_Strict):
    """Options every deploy backend shares (the section's own keys are the backend's)."""

    type: str
    health_url: str | None = None
    health_timeout: Duration = 120.0
    health_interval: Duration = 0.05
    baseline: BaselineOptions = BaselineOptions()
    observe: Schedule | None = Schedule(interval=60.0)  # record running images no release describes
    green_check: Schedule | None = Schedule(interval=60.0)  # mark releases green after releases.green_after


@dataclass(frozen=True, slots=True)
class DeployedRelease:
    """What runs now. ``image_id`` is the content id (compare these, never names)."""

    version: str | None
    image: str | None = None
    image_id: str | None = None
    containers: dict[str, str] = field(default_factory=dict)  # name -> image id (docker)

    def matches(self, release: Release) -> bool:
        if self.image_id and release.digest:
            return same_digest(self.image_id, release.digest)
        return self.version is not None and self.version == release.version

    def to_json(self) -> JSON:
        return {
            "version": self.version,
            "image": self.image,
            "image_id": self.image_id,
            "containers": dict(self.containers),
        }


def same_digest(a: str, b: str) -> bool:
    return a.removeprefix("sha256:") == b.removeprefix("sha256:")


class Deployer(Protocol):
    options: DeployOptions

    async def current(self) -> DeployedRelease: ...
    async def deploy(self, release: Release, *, incident: str) -> JSON: ...
    async def wait_healthy(self, deadline: float) -> JSON: ...
    async def healthy(self) -> bool: ...
    async def roll_forward(self, of_incident: str, release: Release | None, *, incident: str) -> JSON: ...
    async def resolve(self, image: str) -> str | None: ...
    async def close(self) -> None: ...


def render(template: Any, values: dict[str, str]) -> Any:
    """Substitute ``{version}``, ``{image}``, ``{digest}``, ``{incident}`` in strings of a structure
    (argv lists, JSON bodies). Values are data: never parsed, never put in a shell line."""
    if isinstance(template, str):
        out = template
        for key in TEMPLATE_KEYS:
            out = out.replace("{" + key + "}", values.get(key, ""))
        return out
    if isinstance(template, list):
        return [render(v, values) for v in template]
    if isinstance(template, dict):
        return {k: render(v, values) for k, v in template.items()}
    return template


def release_values(release: Release, incident: str) -> dict[str, str]:
    return {
        "version": release.version,
        "image": release.image or "",
        "digest": release.digest or "",
        "incident": incident,
    }


async def probe(url: str, timeout: float = 2.0) -> str | None:
    """None when ``url`` answers 2xx; otherwise what it answered (for error messages)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as resp,
        ):
            await resp.read()
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def wait_urls(urls: list[str], deadline: float, interval: float, what: str) -> JSON:
    """Poll every URL until each answers 2xx or the monotonic deadline passes (BackendError, retryable)."""
    started = time.monotonic()
    pending = list(urls)
    last: dict[str, str] = {}
    while pending:
        results = await asyncio.gather(*(probe(u) for u in pending))
        last = {u: r for u, r in zip(pending, results, strict=True) if r is not None}
        pending = list(last)
        if not pending:
            break
        if time.monotonic() >= deadline:
            detail = "; ".join(f"{u}: {r}" for u, r in last.items())
            raise BackendError(what, f"not healthy before the deadline: {detail}", retryable=True)
        await asyncio.sleep(interval)
    return {"healthy_after_s": round(time.monotonic() - started, 3), "health_urls": urls}


HealthTimeout = Annotated[float, Field(gt=0)]


class RedeployByUrl:
    """Shared tail of the backends that deploy by a request (command, http) and judge health by URL:
    roll-forward is a deploy of the release the incident replaced; nothing to resolve or close."""

    backend: str = "deploy"
    options: Any

    async def deploy(self, release: Release, *, incident: str) -> JSON:
        raise NotImplementedError

    async def roll_forward(self, of_incident: str, release: Release | None, *, incident: str) -> JSON:
        if release is None:
            raise BackendError(self.backend, f"incident {of_incident} recorded no release to roll forward to")
        return await self.deploy(release, incident=incident)

    async def wait_healthy(self, deadline: float) -> JSON:
        urls = [self.options.health_url] if self.options.health_url else []
        return await wait_urls(urls, deadline, self.options.health_interval, f"{self.backend} health")

    async def healthy(self) -> bool:
        return self.options.health_url is None or await probe(self.options.health_url) is None

    async def resolve(self, image: str) -> str | None:
        return None

    async def close(self) -> None:
        return None
