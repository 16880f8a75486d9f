"""``type: docker``: recreate the configured containers of a release through the Docker Engine API
(Docker, or Podman's compatible API: the same code, via ``docker_host`` or DOCKER_HOST).

A release carries the spec of each container as it ran (rollbackd.deploy.spec, captured when it was
recorded, marked green or observed); the revert recreates that spec exactly. A release without one
falls back to the inferred create request (rollbackd.deploy.inferred) and the result says so.

The sequence keeps the old container serving until the last moment: rename it ``<name>__pre_<incident>``
(kept, stopped, for roll-forward), create the new one, stop the old, start the new, wait healthy. If the
new one does not start, exits or is not healthy in time, the old one is put back running under its name
and proven serving (rollbackd.deploy.serving). Each sub-operation is idempotent and retried on transport
errors (rollbackd.deploy.engine), and the names tell a resumed attempt where the last one stopped.
Images and containers are compared by ID, never by name.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import docker
import requests
from pydantic import Field

from rollbackd.config import Duration
from rollbackd.deploy import DeployedRelease, DeployOptions, _Strict, same_digest, wait_urls
from rollbackd.deploy.engine import Engine, in_thread, transport_error
from rollbackd.deploy.inferred import creation_body, operator_env
from rollbackd.deploy.serving import await_healthy, put_back
from rollbackd.deploy.spec import creation_body as spec_body
from rollbackd.deploy.spec import normalise, read_sysctls
from rollbackd.errors import BackendError
from rollbackd.records import JSON, Release

__all__ = ["ContainerSpec", "DockerDeployer", "creation_body", "operator_env"]
T = TypeVar("T")
NO_SPEC = "no container spec recorded for this release: settings inferred from the replaced container"


class ContainerSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")]
    health_url: str | None = None


def _running(inspection: dict[str, Any]) -> bool:
    return bool((inspection.get("State") or {}).get("Running"))


class DockerDeployer:
    class Options(DeployOptions):
        docker_host: str | None = None  # default: $DOCKER_HOST, else the local Docker socket
        api_version: str = "1.41"  # pinned: auto-detection costs ~0.5 s per client
        api_timeout: Duration = 60.0
        api_retries: Annotated[int, Field(ge=0, le=10)] = 3  # per sub-operation, on transport errors
        api_backoff: Duration = 0.2  # first retry delay, doubled each time
        port_release_timeout: Duration = 15.0  # how long a put-back start waits for the engine to free a port
        containers: Annotated[list[ContainerSpec], Field(min_length=1)]
        version_label: str = "org.opencontainers.image.version"
        stop_timeout: Annotated[int, Field(ge=0, le=600)] = 10

    resolves_images = True  # a release's image must resolve on this engine when it is recorded

    def __init__(self, options: Options) -> None:
        self.options = options
        self.host = options.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self._client: docker.APIClient | None = None
        self.engine = Engine(self.api, retries=options.api_retries, backoff=options.api_backoff)

    # ---- plumbing -------------------------------------------------------------------------------
    def api(self) -> docker.APIClient:
        socket_path = self.host.removeprefix("unix://")
        if socket_path != self.host and not os.path.exists(socket_path):
            # docker-py leaks the socket of a failed unix connect: say it before it tries
            raise requests.ConnectionError(f"no such socket {socket_path}")
        if self._client is None:  # one client for the daemon's life (no version probe: it is pinned)
            self._client = docker.APIClient(
                base_url=self.host, version=self.options.api_version, timeout=int(self.options.api_timeout)
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await in_thread(fn, *args)

    async def _change(self, fn: Callable[..., T], *args: Any) -> T:
        """A sequence of engine changes (a revert, a roll-forward, a canary), one at a time: a retry after
        a timeout, or a resume after an abort, waits until the cancelled sequence's thread has stopped
        (its call in flight ended), so two sequences never interleave their calls on one container."""
        return await in_thread(self.engine.exclusive, fn, *args)

    def _error(self, exc: Exception, container: str, image: str, doing: str) -> BackendError:
        """A library error as a BackendError naming the container, the image and the API's message."""
        where = f"container {container}, image {image}"
        if transport_error(exc):
            return BackendError(
                "docker", f"{where}: daemon unreachable at {self.host} while {doing}: {exc}", retryable=True
            )
        assert isinstance(exc, docker.errors.APIError)
        message = str(exc.explanation or exc)
        low = message.lower()
        if isinstance(exc, docker.errors.ImageNotFound) or ("image" in low and "not known" in low):
            kind = "image missing"
        elif isinstance(exc, docker.errors.NotFound):
            kind = "container missing"
        elif "address already in use" in low or "port is already allocated" in low or "tcp port" in low:
            kind = "port taken"
        elif exc.status_code == 409 or "already in use" in low:
            kind = "name in use"
        else:
            kind = f"API error {exc.status_code}"
        return BackendError(
            "docker",
            f"{where}: {kind} while {doing}: {message}",
            retryable=exc.status_code is not None and exc.status_code >= 500 and kind.startswith("API"),
        )

    def _inspect(self, name: str) -> dict[str, Any] | None:
        return self.engine.inspect(name)

    def _image(self, ref: str, container: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self.engine.call("inspect", self.api().inspect_image, ref)
            return result
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise self._error(exc, container, ref, "looking up the image") from exc

    def _url(self, name: str) -> str | None:
        spec = next((c for c in self.options.containers if c.name == name), None)
        return (spec.health_url if spec else None) or self.options.health_url

    # ---- Deployer -------------------------------------------------------------------------------
    async def current(self) -> DeployedRelease:
        return await self._thread(self._current)

    def _current(self) -> DeployedRelease:
        containers: dict[str, str] = {}
        first: dict[str, Any] | None = None
        for spec in self.options.containers:
            try:
                found = self._inspect(spec.name)
            except (docker.errors.DockerException, requests.RequestException) as exc:
                raise self._error(exc, spec.name, "-", "inspecting the container") from exc
            if found is None:
                continue
            containers[spec.name] = found["Image"]
            first = first or found
        if first is None:
            return DeployedRelease(version=None)
        image = self._image(first["Image"], self.options.containers[0].name)
        labels = (image.get("Config") or {}).get("Labels") or {}
        tags = image.get("RepoTags") or []
        return DeployedRelease(
            version=labels.get(self.options.version_label),
            image=tags[0] if tags else None,
            image_id=image["Id"],
            containers=containers,
        )

    async def running_image(self) -> str | None:
        """The image id of the first configured container (one inspect), None when there is none."""
        name = self.options.containers[0].name
        try:
            found = await self._thread(self._inspect, name)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise self._error(exc, name, "-", "inspecting the container") from exc
        return None if found is None else str(found["Image"])

    async def resolve(self, image: str) -> str | None:
        def run() -> str | None:
            try:
                return str(self.engine.call("inspect", self.api().inspect_image, image)["Id"])
            except docker.errors.NotFound:
                return None
            except (docker.errors.DockerException, requests.RequestException) as exc:
                raise self._error(exc, "-", image, "resolving the image") from exc

        return await self._thread(run)

    async def capture(self) -> JSON | None:
        """The spec of every configured container that runs now (name -> spec), or None when none runs."""
        return await self._thread(self._capture)

    def _capture(self) -> JSON | None:
        specs: JSON = {}
        for container in self.options.containers:
            try:
                found = self._inspect(container.name)
                if found is None or not _running(found):
                    continue
                libpod = self.engine.libpod(found["Id"])
            except (docker.errors.DockerException, requests.RequestException) as exc:
                raise self._error(exc, container.name, "-", "capturing the container's spec") from exc
            image = self._image(found["Image"], container.name)
            specs[container.name] = normalise(found, libpod, image, read_sysctls(libpod))
        return specs or None

    async def deploy(self, release: Release, *, incident: str) -> JSON:
        ref = release.digest or release.image
        if not ref:
            raise BackendError("docker", f"release {release.version} has neither image nor digest")
        started = time.monotonic()
        results = []
        for container in self.options.containers:
            spec = (release.spec or {}).get(container.name)
            results.append(await self._change(self._recreate, container.name, ref, incident, spec))
        gaps = sorted({g for r in results for g in r.get("gaps") or []})
        return {
            "containers": results,
            "deploy_s": round(time.monotonic() - started, 3),
            "noop": all(r["action"] == "noop" for r in results),
            "spec": ("recorded" + (f", except {'; '.join(gaps)}" if gaps else ""))
            if all(r.get("spec") != NO_SPEC for r in results)
            else NO_SPEC,
        }

    def _recreate(self, name: str, ref: str, incident: str, spec: JSON | None) -> JSON:
        image_id = str(self._image(ref, name)["Id"])  # first: its errors are mapped (daemon unreachable...)
        kept = f"{name}__pre_{incident}"
        try:
            cur, pre = self._inspect(name), self._inspect(kept)
            if cur is not None and same_digest(cur["Image"], image_id):
                return self._resume(name, cur, pre, image_id, kept)
            if cur is not None and pre is not None:
                raise docker.errors.APIError(
                    f"{kept} already exists and {name} runs another image",
                    explanation=f"the name {kept} is already in use",
                )
            source = cur or pre
            if source is None:
                raise docker.errors.NotFound(f"no container named {name} (nor {kept})")
            if cur is not None:
                self.engine.rename(cur["Id"], kept)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise self._error(exc, name, ref, "preparing the replacement") from exc
        return self._swap(name, source, image_id, ref, kept, spec)

    def _resume(self, name: str, cur: JSON, pre: JSON | None, image_id: str, kept: str) -> JSON:
        """``name`` already holds the target image: done, or an attempt cut short after the create."""
        if pre is None:
            if not _running(cur):
                self.engine.start(cur["Id"])
            return {"container": name, "action": "noop" if _running(cur) else "started", "image_id": image_id}
        finished = _running(cur) and not _running(pre)  # a finished revert, or one cut short before judging
        if _running(pre):
            self.engine.stop(pre["Id"], timeout=self.options.stop_timeout)
        if not _running(cur):
            self.engine.start(cur["Id"])
        health = self._judge(name, pre, cur["Id"])
        return {
            "container": name,
            "action": "noop" if finished else "started",
            "image_id": image_id,
            "kept": kept,
            "resumed": not finished,
            "health": health,
        }

    def _body(self, source: JSON, image_id: str, spec: JSON | None) -> tuple[JSON, str]:
        if spec is not None and same_digest(str(spec.get("image_id") or ""), image_id):
            return spec_body(spec), "recorded"
        try:
            old_image = self._image(source["Image"], "-").get("Config") or {}
        except BackendError:
            old_image = {}  # the old image was removed: keep all of the container's settings
        return creation_body(source, old_image, image_id), NO_SPEC

    def _swap(self, name: str, source: JSON, image_id: str, ref: str, kept: str, spec: JSON | None) -> JSON:
        """Create the new container, stop the old (now named ``kept``), start the new, judge it; on
        any failure the old one is put back under its name, running and serving."""
        body, how = self._body(source, image_id, spec)
        new_id: str | None = None
        try:
            new_id = self.engine.create(body, name)
            stopped = time.monotonic()
            self.engine.stop(source["Id"], timeout=self.options.stop_timeout)
            self.engine.start(new_id)
            started = time.monotonic()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            self._fail(
                name,
                source,
                new_id,
                f"the new container did not start: {self._error(exc, name, ref, 'creating and starting it')}",
            )
        health = self._judge(name, source, new_id)
        return {
            "container": name,
            "action": "recreated",
            "image_id": image_id,
            "kept": kept,
            "spec": how,
            "gaps": list((spec or {}).get("gaps") or []) if how == "recorded" else [],
            "stop_start_s": round(started - stopped, 3),
            "id": new_id,
            "health": health,
        }

    def _judge(self, name: str, old: JSON, new_id: str) -> str:
        opts = self.options
        verdict = await_healthy(
            self.engine, new_id, self._url(name), time.monotonic() + opts.health_timeout, opts.health_interval
        )
        if not verdict.ok:
            self._fail(name, old, new_id, f"the new container {verdict.detail}")
        return verdict.detail

    def _fail(self, name: str, old: JSON, new_id: str | None, reason: str) -> NoReturn:
        opts = self.options
        back = put_back(
            self.engine,
            name=name,
            old=old,
            new_id=new_id,
            url=self._url(name),
            port_timeout=opts.port_release_timeout,
            health_timeout=opts.health_timeout,
            interval=opts.health_interval,
        )
        if back.ok:
            raise BackendError(
                "docker",
                f"container {name}: {reason}; the previous container (image "
                f"{old['Image']}) is back under {name}, {back.detail}",
            )
        raise BackendError(
            "docker",
            f"container {name}: {reason}; NO RUNNING CONTAINER: putting the previous "
            f"one (image {old['Image']}) back failed: {back.detail}",
        )

    async def roll_forward(self, of_incident: str, release: Release | None, *, incident: str) -> JSON:
        results = []
        for spec in self.options.containers:
            results.append(await self._change(self._forward, spec.name, of_incident, incident, release))
        return {"containers": results, "noop": all(r["action"] == "noop" for r in results)}

    def _forward(self, name: str, of_incident: str, incident: str, release: Release | None) -> JSON:
        """Start ``<name>__pre_<of_incident>`` again under ``name``; keep the current one as
        ``<name>__pre_<incident>`` (so a roll-forward can itself be undone). When the revert failed and
        put the previous container back, that container is what to roll forward to: start it if needed."""
        kept, keep_now = f"{name}__pre_{of_incident}", f"{name}__pre_{incident}"
        try:
            old, cur = self._inspect(kept), self._inspect(name)
            if old is None:
                return self._forward_in_place(name, cur, kept, release)
            if cur is not None:
                self.engine.rename(cur["Id"], keep_now)
            self.engine.rename(old["Id"], name)
            stopped = time.monotonic()
            if cur is not None:
                self.engine.stop(cur["Id"], timeout=self.options.stop_timeout)
            self.engine.start(old["Id"])
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise self._error(exc, name, kept, "rolling forward") from exc
        return {
            "container": name,
            "action": "rolled_forward",
            "image_id": old["Image"],
            "kept": keep_now,
            "stop_start_s": round(time.monotonic() - stopped, 3),
        }

    def _forward_in_place(self, name: str, cur: JSON | None, kept: str, release: Release | None) -> JSON:
        wanted = release.digest if release is not None else None
        if cur is None or (wanted and not same_digest(cur["Image"], wanted)):
            raise docker.errors.NotFound(f"no kept container {kept} to roll forward to")
        if not _running(cur):
            self.engine.start(cur["Id"])
        return {"container": name, "action": "noop", "image_id": cur["Image"], "started": not _running(cur)}

    async def serving(self) -> JSON:
        """Which configured containers run now (for status): ``note`` is NO RUNNING CONTAINER when none."""

        def run() -> JSON:
            found = {c.name: self._inspect(c.name) for c in self.options.containers}
            containers = {n: {"running": _running(f), "image_id": f["Image"]} for n, f in found.items() if f}
            serving = [n for n, c in containers.items() if c["running"]]
            return {"serving": serving, "containers": containers, "note": None if serving else "NO RUNNING CONTAINER"}

        try:
            return await self._thread(run)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise self._error(exc, self.options.containers[0].name, "-", "inspecting the containers") from exc

    def _urls(self) -> list[str]:
        return [u for u in (self._url(s.name) for s in self.options.containers) if u]

    async def wait_healthy(self, deadline: float) -> JSON:
        return await wait_urls(self._urls(), deadline, self.options.health_interval, "docker health")

    async def healthy(self) -> bool:
        from rollbackd.deploy import probe

        return all(r is None for r in await asyncio.gather(*(probe(u) for u in self._urls())))
