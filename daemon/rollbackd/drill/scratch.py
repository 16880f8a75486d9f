"""The drill's scratch things that are not data: a container of the green image beside the live one,
and a copy of the service's checks pointed at it.

The container is created from the LIVE container's operator config (deploy.docker.creation_body, so the
green image brings its own env and labels) with what must differ for a rehearsal: its own name
``<name>__drill_<id>``, the ``drill.env`` overrides, no published ports but ``container_port`` on
127.0.0.1 and the drill port, no network aliases (a shared alias would send live traffic to it), no
restart policy, and the ``rollbackd.drill`` labels. Nothing here writes to the live container.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import docker
import requests

from rollbackd.deploy.docker import DockerDeployer, creation_body
from rollbackd.drill.options import SKIPPED_BY_DEFAULT, DrillOptions, render
from rollbackd.errors import BackendError, FatalError
from rollbackd.records import JSON

if TYPE_CHECKING:
    from rollbackd.config import ServiceConfig
    from rollbackd.verify import Verifier

LABEL = "rollbackd.drill"
SERVICE_LABEL = "rollbackd.drill.service"
INSTALLATION_LABEL = "rollbackd.drill.installation"
_DOCKER_ERRORS = (docker.errors.DockerException, requests.RequestException)


def base_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def live_urls(deployer: DockerDeployer) -> list[str]:
    return [u for u in (s.health_url or deployer.options.health_url for s in deployer.options.containers) if u]


def live_ports(deployer: DockerDeployer, inspection: dict[str, Any] | None = None) -> set[int]:
    """Ports the live service answers on: its health URLs' and its published host ports."""
    ports = {urlsplit(u).port or (443 if u.startswith("https") else 80) for u in live_urls(deployer)}
    bindings = ((inspection or {}).get("HostConfig") or {}).get("PortBindings") or {}
    for hosts in bindings.values():
        ports |= {int(h["HostPort"]) for h in hosts or [] if str(h.get("HostPort") or "").isdigit()}
    return ports


def derived_rewrite(deployer: DockerDeployer) -> dict[str, str]:
    """The live base URL(s) -> the scratch container's (``http://127.0.0.1:{port}``)."""
    out = {}
    for url in live_urls(deployer):
        parts = urlsplit(url)
        out[base_of(url)] = f"{parts.scheme}://127.0.0.1:{{port}}"
    return out


def dsn_rewrite(snapshots_cfg: dict[str, Any], prepared: dict[str, JSON]) -> dict[str, str]:
    """A Postgres store's DSN as written in config -> the same DSN on the scratch database."""
    out = {}
    for name, store in (snapshots_cfg.get("stores") or {}).items():
        restored = prepared.get(name) or {}
        dsn = store.get("dsn") if isinstance(store, dict) else None
        if restored.get("kind") != "postgres" or not isinstance(dsn, str):
            continue
        head, sep, tail = dsn.partition("?")
        if head.endswith("/" + str(restored["live"])):
            out[dsn] = head[: -len(str(restored["live"]))] + str(restored["database"]) + sep + tail
    return out


def rewrite_strings(value: Any, mapping: dict[str, str], exact: dict[str, str] | None = None) -> Any:
    """Every string of a structure with each ``mapping`` key replaced (URL bases), and the strings
    equal to an ``exact`` key swapped whole (DSNs: ``.../rag`` must not match ``.../rag_audit``)."""
    if isinstance(value, str):
        if exact and value in exact:
            return exact[value]
        for old, new in mapping.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [rewrite_strings(v, mapping, exact) for v in value]
    if isinstance(value, dict):
        return {k: rewrite_strings(v, mapping, exact) for k, v in value.items()}
    return value


def scratch_checks(
    name: str, svc: ServiceConfig, opts: DrillOptions, mapping: dict[str, str], exact: dict[str, str] | None = None
) -> list[Verifier]:
    """The service's checks, every string option rewritten, those chosen by ``drill.checks``."""
    from rollbackd.verify.plugin import _checks_of

    patched = rewrite_strings(dict(svc.verify or {}), mapping, exact)
    checks, problems = _checks_of(name, svc.model_copy(update={"verify": patched}))
    if problems:
        raise FatalError(f"the drill's rewritten checks are invalid: {problems[0]}")
    wanted = opts.checks
    return [c for c in checks if (c.name in wanted if wanted is not None else c.type not in SKIPPED_BY_DEFAULT)]


class ScratchContainer:
    """Create, start and remove ``<live>__drill_<id>``; every Docker call in a thread."""

    def __init__(
        self, deployer: DockerDeployer, live_name: str, drill_id: str, service: str, installation: str = ""
    ) -> None:
        self.deployer = deployer
        self.live_name = live_name
        self.name = f"{live_name}__drill_{drill_id}"
        self.drill_id = drill_id
        self.service = service
        self.installation = installation
        self._starting: asyncio.Future[str] | None = None

    def _fail(self, exc: Exception, image: str, doing: str) -> BackendError:
        return self.deployer._error(exc, self.name, image, doing)

    async def inspect_live(self) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            found = self.deployer._inspect(self.live_name)
            if found is None:
                raise FatalError(f"no live container {self.live_name}: nothing to copy the configuration from")
            return found

        try:
            return await asyncio.to_thread(run)
        except _DOCKER_ERRORS as exc:
            raise self._fail(exc, "-", "inspecting the live container") from exc

    async def plan(
        self, live: dict[str, Any], image_ref: str, env: dict[str, str], port: int, container_port: int | None
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(image id, creation body, effective): the body to send, and what the container would really run
        with (the image's env and command under the body's), to check before it exists."""
        return await asyncio.to_thread(self._plan, live, image_ref, env, port, container_port)

    def _plan(
        self, live: dict[str, Any], image_ref: str, env: dict[str, str], port: int, container_port: int | None
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        try:
            image = self.deployer._image(image_ref, self.name)
            try:
                live_image = self.deployer._image(live["Image"], self.live_name).get("Config") or {}
            except BackendError:
                live_image = {}
        except _DOCKER_ERRORS as exc:
            raise self._fail(exc, image_ref, "reading the images of the scratch container") from exc
        image_id = str(image["Id"])
        body = self.body(creation_body(live, live_image, image_id), env, port, container_port)
        config = image.get("Config") or {}
        own = {x.partition("=")[0] for x in body.get("Env") or []}
        effective = {
            "Env": [*(e for e in config.get("Env") or [] if e.partition("=")[0] not in own), *(body.get("Env") or [])],
            "Cmd": body.get("Cmd") or config.get("Cmd"),
            "Entrypoint": body.get("Entrypoint") or config.get("Entrypoint"),
        }
        return image_id, body, effective

    async def start(self, image_id: str, body: dict[str, Any], port: int) -> JSON:
        def run() -> str:
            api = self.deployer.api()
            created = str(api.create_container_from_config(body, self.name)["Id"])
            api.start(created)
            return created

        # A cancelled await leaves the thread running: remove() waits for it, or the container would be
        # created after the teardown removed "nothing".
        self._starting = asyncio.ensure_future(asyncio.to_thread(run))
        try:
            created = await asyncio.shield(self._starting)
        except _DOCKER_ERRORS as exc:
            raise self._fail(exc, image_id, "creating and starting the scratch container") from exc
        return {"container": self.name, "id": created, "image_id": image_id, "port": port}

    def body(self, body: dict[str, Any], env: dict[str, str], port: int, container_port: int | None) -> dict[str, Any]:
        body["Env"] = [e for e in body.get("Env") or [] if e.partition("=")[0] not in env]
        body["Env"] += [f"{k}={v}" for k, v in env.items()]
        body["Labels"] = {
            **(body.get("Labels") or {}),
            LABEL: self.drill_id,
            SERVICE_LABEL: self.service,
            INSTALLATION_LABEL: self.installation,
        }
        body.pop("Hostname", None)
        host = body.setdefault("HostConfig", {})
        host.pop("PortBindings", None)
        host.pop("RestartPolicy", None)
        if container_port is not None:
            key = f"{container_port}/tcp"
            host["PortBindings"] = {key: [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
            body["ExposedPorts"] = {**(body.get("ExposedPorts") or {}), key: {}}
        endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
        for endpoint in endpoints.values():
            endpoint["Aliases"] = []
        return body

    async def remove(self) -> bool:
        """Remove it (stopped or not), once a create still under way has finished; False when there was
        nothing to remove."""
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._starting)
        try:
            return await remove_named(self.deployer, self.name)
        except _DOCKER_ERRORS as exc:
            raise self._fail(exc, "-", "removing the scratch container") from exc

    async def condition(self) -> str:
        """What the container is doing, for a NO-GO reason: its state and its last log lines (a crash on
        start and a slow start look alike from the health URL: refused)."""

        def run() -> str:
            api = self.deployer.api()
            state = api.inspect_container(self.name).get("State") or {}
            status = str(state.get("Status") or "unknown")
            if not state.get("Running"):
                status += f", exit code {state.get('ExitCode')}" + (", OOM-killed" if state.get("OOMKilled") else "")
            logs = api.logs(self.name, tail=3).decode(errors="replace").strip().replace("\n", " | ")
            return f"container {status}" + (f"; last log lines: {logs[-300:]}" if logs else "; no log lines")

        try:
            return await asyncio.to_thread(run)
        except _DOCKER_ERRORS as exc:
            return f"container state unknown ({type(exc).__name__}: {exc})"

    async def exists(self) -> bool:
        return await asyncio.to_thread(self.deployer._inspect, self.name) is not None


async def remove_named(deployer: DockerDeployer, name: str) -> bool:
    """Remove a scratch container by name (never anything without ``__drill_`` in it)."""
    if "__drill_" not in name:
        raise FatalError(f"refusing to remove {name!r}: not a drill's scratch container")

    def run() -> bool:
        try:
            deployer.api().remove_container(name, force=True, v=True)
            return True
        except docker.errors.NotFound:
            return False

    return await asyncio.to_thread(run)


async def sweep(deployer: DockerDeployer, service: str, installation: str, running: str | None = None) -> list[str]:
    """Scratch containers this installation's crashed drills left behind (found by label; never a live
    container, never the ``running`` drill's, never another installation's: another daemon may be
    drilling on the same engine now)."""

    def run() -> list[str]:
        api = deployer.api()
        removed = []
        mine = [f"{SERVICE_LABEL}={service}", f"{INSTALLATION_LABEL}={installation}"]
        for c in api.containers(all=True, filters={"label": mine}):
            labels = c.get("Labels") or {}
            if labels.get(SERVICE_LABEL) != service or labels.get(INSTALLATION_LABEL) != installation:
                continue  # an engine that ignored a filter: the labels decide
            if running is not None and labels.get(LABEL) == running:
                continue
            names = [str(n).lstrip("/") for n in c.get("Names") or []]
            if any("__drill_" in n for n in names):
                api.remove_container(c["Id"], force=True)
                removed.extend(names)
        return removed

    return await asyncio.to_thread(run)


def health_url(opts: DrillOptions, deployer: DockerDeployer, values: dict[str, str]) -> str:
    if opts.health_url is not None:
        return render(opts.health_url, values)
    urls = live_urls(deployer)
    if not urls:
        raise FatalError("no health_url: set drill.health_url (with {port})")
    parts = urlsplit(urls[0])
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{parts.scheme}://127.0.0.1:{values['port']}{rest}"
