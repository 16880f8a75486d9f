"""The canary of a ``type: docker`` service: a second container ``<name><suffix>`` (``rag__canary``)
beside the live one, created with the live container's operator settings (env, mounts, networks,
limits: rollbackd.deploy.inferred) and the new release's image, published on ``rollout.canary.port``
(its port bindings moved there; ``env`` sets e.g. the port of a host-network service). Idempotent: a
canary of the same image is kept (started if stopped), another is replaced; removing a missing one is
done."""

from __future__ import annotations

import time
from typing import Any

import docker
import requests

from rollbackd.deploy import same_digest, wait_urls
from rollbackd.deploy.docker import DockerDeployer, creation_body
from rollbackd.errors import BackendError
from rollbackd.records import JSON, Release
from rollbackd.rollout.config import Canary


def _moved_ports(host: dict[str, Any], port: int | None) -> dict[str, Any]:
    bindings = host.get("PortBindings") or {}
    if port is None or not bindings:
        return host
    moved = {key: [{**b, "HostPort": str(port)} for b in (value or [])] for key, value in bindings.items()}
    return {**host, "PortBindings": moved}


class DockerCanary:
    def __init__(self, deployer: DockerDeployer, options: Canary) -> None:
        self.deployer = deployer
        self.options = options
        self.live = deployer.options.containers[0]  # the canary copies the first (serving) container

    @property
    def name(self) -> str:
        return self.live.name + self.options.suffix

    def _env(self, body: dict[str, Any]) -> list[str]:
        extra = {k: v.replace("{port}", str(self.options.port or "")) for k, v in self.options.env.items()}
        kept = [e for e in body.get("Env") or [] if e.split("=", 1)[0] not in extra]
        return kept + [f"{k}={v}" for k, v in extra.items()]

    def _create(self, release: Release) -> JSON:
        d = self.deployer
        ref = release.digest or release.image
        if not ref:
            raise BackendError("rollout canary", f"release {release.version} has neither image nor digest")
        image = d._image(ref, self.name)
        image_id = str(image["Id"])
        try:
            cur = d._inspect(self.name)
            if cur is not None and same_digest(cur["Image"], image_id):
                if not (cur.get("State") or {}).get("Running"):
                    d.engine.start(cur["Id"])
                return {"canary": self.name, "action": "kept", "image_id": image_id}
            if cur is not None:
                d.engine.remove(cur["Id"])
            live = d._inspect(self.live.name)
            if live is None:
                raise BackendError("rollout canary", f"no live container {self.live.name} to copy")
            body = creation_body(live, image.get("Config") or {}, image_id)
            body["Env"] = self._env(body)
            body["HostConfig"] = _moved_ports(body.get("HostConfig") or {}, self.options.port)
            new_id = d.engine.create(body, self.name)
            d.engine.start(new_id)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise d._error(exc, self.name, ref, "creating the canary") from exc
        return {"canary": self.name, "action": "created", "image_id": image_id, "id": new_id}

    async def deploy(self, release: Release, *, rollout_id: str, service: str) -> JSON:
        out = await self.deployer._change(self._create, release)
        if self.options.health_url:
            out.update(
                await wait_urls(
                    [self.options.health_url], time.monotonic() + self.options.timeout, 0.2, "rollout canary health"
                )
            )
        return out

    def _remove(self) -> JSON:
        try:
            cur = self.deployer._inspect(self.name)
            if cur is None:
                return {"canary": self.name, "removed": False}
            self.deployer.engine.remove(cur["Id"])
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise self.deployer._error(exc, self.name, "-", "removing the canary") from exc
        return {"canary": self.name, "removed": True}

    async def remove(self, release: Release, *, rollout_id: str, service: str) -> JSON:
        return await self.deployer._change(self._remove)
