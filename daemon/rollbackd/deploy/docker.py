"""``type: docker``: recreate the configured containers from a release's image through the Docker
Engine API (Docker, or Podman's compatible API: the same code, via ``docker_host`` or DOCKER_HOST).

A container's inspected Env, Labels, Cmd, Entrypoint, Healthcheck and WorkingDir are the *merge* of its
image's values and the operator's (plus the engine's own PATH, TERM, HOSTNAME, container=). Recreating
from that merge would pin the bad image's settings onto the green one, so the operator's part is the
container's value minus its image's (an entry equal to the image's is the image's); the new image
brings its own. Ports, mounts, restart policy, networks and the healthcheck are kept.

The sequence keeps the old container serving until the last moment: rename it ``<name>__pre_<incident>``
(kept, stopped, for roll-forward), create the new one, stop the old, start the new, wait healthy. Each
stage can be re-entered after a crash: the names tell where it stopped. Images and containers are
compared by ID, never by name (Podman names a local image ``localhost/x:v1``, a tag makes ``docker.io/...``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import docker
import requests
from pydantic import Field

from rollbackd.config import Duration
from rollbackd.deploy import DeployedRelease, DeployOptions, _Strict, same_digest, wait_urls
from rollbackd.errors import BackendError
from rollbackd.records import JSON, Release

T = TypeVar("T")
ENGINE_ENV = frozenset({"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"})
_HOST_KEYS = ("Binds", "Mounts", "PortBindings", "RestartPolicy", "NetworkMode", "ExtraHosts", "Dns",
              "DnsOptions", "DnsSearch", "CapAdd", "CapDrop", "Privileged", "ReadonlyRootfs", "Memory",
              "NanoCpus", "CpuShares", "SecurityOpt", "Tmpfs", "Ulimits", "Init", "ShmSize")
_CONFIG_KEYS = ("Cmd", "Entrypoint", "Healthcheck", "WorkingDir", "User")
_DEFAULTS = {"WorkingDir": "/"}
_DEFAULT_NETS = frozenset({"bridge", "podman", "default"})


class ContainerSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")]
    health_url: str | None = None


def operator_env(env: list[str] | None, image_env: list[str] | None, hostname: str | None) -> list[str]:
    """The container's environment minus its image's and the engine's own entries."""
    image = set(image_env or [])
    image_keys = {e.partition("=")[0] for e in image}
    out: list[str] = []
    for entry in env or []:
        key, _, value = entry.partition("=")
        engine = entry in ENGINE_ENV and key not in image_keys
        if entry in image or engine or key == "container" or (key == "HOSTNAME" and value == hostname):
            continue
        out.append(entry)
    return out


def creation_body(source: dict[str, Any], image_config: dict[str, Any], image_id: str) -> dict[str, Any]:
    """The create request for ``image_id`` keeping the operator's part of ``source`` (an inspection)."""
    cfg = source.get("Config") or {}
    host = source.get("HostConfig") or {}
    image_labels = image_config.get("Labels") or {}
    body: dict[str, Any] = {
        "Image": image_id,
        "Env": operator_env(cfg.get("Env"), image_config.get("Env"), cfg.get("Hostname")),
        "Labels": {k: v for k, v in (cfg.get("Labels") or {}).items() if image_labels.get(k) != v},
        "ExposedPorts": cfg.get("ExposedPorts") or {},
    }
    for key in _CONFIG_KEYS:
        value = cfg.get(key)
        if value and value != image_config.get(key) and value != _DEFAULTS.get(key):
            body[key] = value
    if cfg.get("Hostname") and not str(source.get("Id", "")).startswith(cfg["Hostname"]):
        body["Hostname"] = cfg["Hostname"]
    body["HostConfig"] = {k: host[k] for k in _HOST_KEYS if host.get(k) not in (None, [], {}, "")}
    if "Ulimits" in body["HostConfig"]:  # Podman inspects `RLIMIT_NOFILE`, and accepts only `nofile`
        body["HostConfig"]["Ulimits"] = [{**u, "Name": str(u["Name"]).lower().removeprefix("rlimit_")}
                                         for u in body["HostConfig"]["Ulimits"]]
    networks = (source.get("NetworkSettings") or {}).get("Networks") or {}
    mode = str(host.get("NetworkMode") or "")
    if networks and mode not in ("host", "none") and not mode.startswith("container:"):
        ident = str(source.get("Id", ""))
        body["NetworkingConfig"] = {"EndpointsConfig": {
            net: {"Aliases": [a for a in (ep or {}).get("Aliases") or [] if not ident.startswith(a)]}
            for net, ep in networks.items()
        }}
        named = [n for n in networks if n not in _DEFAULT_NETS]
        if named and mode in _DEFAULT_NETS:
            body["HostConfig"]["NetworkMode"] = named[0]
    return body


def _running(inspection: dict[str, Any]) -> bool:
    return bool((inspection.get("State") or {}).get("Running"))


class DockerDeployer:
    class Options(DeployOptions):
        docker_host: str | None = None  # default: $DOCKER_HOST, else the local Docker socket
        api_version: str = "1.41"  # pinned: auto-detection costs ~0.5 s per client
        api_timeout: Duration = 60.0
        containers: Annotated[list[ContainerSpec], Field(min_length=1)]
        version_label: str = "org.opencontainers.image.version"
        stop_timeout: Annotated[int, Field(ge=0, le=600)] = 10

    def __init__(self, options: Options) -> None:
        self.options = options
        self.host = options.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self._client: docker.APIClient | None = None

    # ---- plumbing -------------------------------------------------------------------------------
    def api(self) -> docker.APIClient:
        socket_path = self.host.removeprefix("unix://")
        if socket_path != self.host and not os.path.exists(socket_path):
            # docker-py leaks the socket of a failed unix connect: say it before it tries
            raise requests.ConnectionError(f"no such socket {socket_path}")
        if self._client is None:  # one client for the daemon's life (no version probe: it is pinned)
            self._client = docker.APIClient(base_url=self.host, version=self.options.api_version,
                                            timeout=int(self.options.api_timeout))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    def _error(self, exc: Exception, container: str, image: str, doing: str) -> BackendError:
        """A library error as a BackendError naming the container, the image and the API's message."""
        where = f"container {container}, image {image}"
        if isinstance(exc, requests.RequestException | docker.errors.DockerException) and not isinstance(
                exc, docker.errors.APIError):
            return BackendError("docker", f"{where}: daemon unreachable at {self.host} while {doing}: {exc}",
                                retryable=True)
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
        return BackendError("docker", f"{where}: {kind} while {doing}: {message}",
                            retryable=exc.status_code is not None and exc.status_code >= 500 and kind.startswith("API"))

    def _inspect(self, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.api().inspect_container(name)
            return result
        except docker.errors.NotFound:
            return None

    def _image(self, ref: str, container: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self.api().inspect_image(ref)
            return result
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise self._error(exc, container, ref, "looking up the image") from exc

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
        return DeployedRelease(version=labels.get(self.options.version_label), image=tags[0] if tags else None,
                               image_id=image["Id"], containers=containers)

    async def resolve(self, image: str) -> str | None:
        def run() -> str | None:
            try:
                return str(self.api().inspect_image(image)["Id"])
            except docker.errors.NotFound:
                return None
            except (docker.errors.DockerException, requests.RequestException) as exc:
                raise self._error(exc, "-", image, "resolving the image") from exc
        return await self._thread(run)

    async def deploy(self, release: Release, *, incident: str) -> JSON:
        ref = release.digest or release.image
        if not ref:
            raise BackendError("docker", f"release {release.version} has neither image nor digest")
        started = time.monotonic()
        results = []
        for spec in self.options.containers:
            results.append(await self._thread(self._recreate, spec.name, ref, incident))
        return {"containers": results, "deploy_s": round(time.monotonic() - started, 3),
                "noop": all(r["action"] == "noop" for r in results)}

    def _recreate(self, name: str, ref: str, incident: str) -> JSON:
        image_id = str(self._image(ref, name)["Id"])  # first: its errors are mapped (daemon unreachable...)
        api = self.api()
        kept = f"{name}__pre_{incident}"
        try:
            cur, pre = self._inspect(name), self._inspect(kept)
            if cur is not None and same_digest(cur["Image"], image_id):
                if _running(cur):
                    return {"container": name, "action": "noop", "image_id": image_id}
                if pre is not None and _running(pre):
                    api.stop(pre["Id"], timeout=self.options.stop_timeout)
                api.start(cur["Id"])
                return {"container": name, "action": "started", "image_id": image_id, "kept": kept}
            if cur is not None and pre is not None:
                raise docker.errors.APIError(f"{kept} already exists and {name} runs another image",
                                             explanation=f"the name {kept} is already in use")
            source = cur or pre
            if source is None:
                raise docker.errors.NotFound(f"no container named {name} (nor {kept})")
            if cur is not None:
                api.rename(cur["Id"], kept)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise self._error(exc, name, ref, "preparing the replacement") from exc
        return self._swap(name, source, image_id, ref, kept)

    def _swap(self, name: str, source: dict[str, Any], image_id: str, ref: str, kept: str) -> JSON:
        """Create the new container from ``source`` (now named ``kept``), stop the old, start the new;
        on failure put the old one back under its name, running."""
        api = self.api()
        try:
            old_image = self._image(source["Image"], name).get("Config") or {}
        except BackendError:
            old_image = {}  # the old image was removed: keep all of the container's settings
        new_id: str | None = None
        try:
            new_id = str(api.create_container_from_config(creation_body(source, old_image, image_id), name)["Id"])
            stopped = time.monotonic()
            api.stop(source["Id"], timeout=self.options.stop_timeout)
            api.start(new_id)
            started = time.monotonic()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            self._restore(name, source["Id"], new_id)
            raise self._error(exc, name, ref, "creating and starting the new container") from exc
        return {"container": name, "action": "recreated", "image_id": image_id, "kept": kept,
                "stop_start_s": round(started - stopped, 3), "id": new_id}

    def _restore(self, name: str, old_id: str, new_id: str | None) -> None:
        api = self.api()
        steps: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [(api.rename, (old_id, name)), (api.start, (old_id,))]
        if new_id is not None:
            steps.insert(0, (api.remove_container, (new_id,)))
        for fn, args in steps:
            try:
                fn(*args, **({"force": True} if fn == api.remove_container else {}))
            except (docker.errors.DockerException, requests.RequestException):
                continue  # best effort: the error raised afterwards says what failed first

    async def roll_forward(self, of_incident: str, release: Release | None, *, incident: str) -> JSON:
        results = []
        for spec in self.options.containers:
            results.append(await self._thread(self._forward, spec.name, of_incident, incident))
        return {"containers": results, "noop": all(r["action"] == "noop" for r in results)}

    def _forward(self, name: str, of_incident: str, incident: str) -> JSON:
        """Start ``<name>__pre_<of_incident>`` again under ``name``; keep the current one as
        ``<name>__pre_<incident>`` (so a roll-forward can itself be undone)."""
        api = self.api()
        kept, keep_now = f"{name}__pre_{of_incident}", f"{name}__pre_{incident}"
        try:
            old, cur, parked = self._inspect(kept), self._inspect(name), self._inspect(keep_now)
            if old is None:
                if cur is not None and parked is not None:
                    if not _running(cur):
                        api.start(cur["Id"])
                    return {"container": name, "action": "noop", "kept": keep_now}
                raise docker.errors.NotFound(f"no kept container {kept} to roll forward to")
            if cur is not None:
                api.rename(cur["Id"], keep_now)
            api.rename(old["Id"], name)
            stopped = time.monotonic()
            if cur is not None:
                api.stop(cur["Id"], timeout=self.options.stop_timeout)
            api.start(old["Id"])
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise self._error(exc, name, kept, "rolling forward") from exc
        return {"container": name, "action": "rolled_forward", "image_id": old["Image"], "kept": keep_now,
                "stop_start_s": round(time.monotonic() - stopped, 3)}

    def _urls(self) -> list[str]:
        return [u for u in (s.health_url or self.options.health_url for s in self.options.containers) if u]

    async def wait_healthy(self, deadline: float) -> JSON:
        return await wait_urls(self._urls(), deadline, self.options.health_interval, "docker health")

    async def healthy(self) -> bool:
        from rollbackd.deploy import probe

        return all(r is None for r in await asyncio.gather(*(probe(u) for u in self._urls())))
