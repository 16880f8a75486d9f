"""Never without a running container (real Podman): when the green container does not start, exits, or is
not healthy in time, the previous one is back running under its name and proven serving; when even that
fails the error says NO RUNNING CONTAINER; roll-forward works from every one of these states.

The bad v2 here answers its health URL (a release can be bad and healthy); the green spec is the one
captured from a v1 container, altered to fail in each way.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rollbackd.cli import render
from rollbackd.deploy.docker import DockerDeployer
from rollbackd.errors import BackendError
from rollbackd.records import JSON, Release
from tests.support import images
from tests.support.podman import PodmanService
from tests.support.podman import podman as podman

pytestmark = pytest.mark.integration
SVC = {"budget": {"remaining": 1, "max": 1, "window_s": 60}, "cooldown_remaining_s": 0}
FAILURES = {
    "start_fails": (["/nonexistent"], "did not start"),
    "exits": (["/bin/sh", "-c", "exit 3"], "exited (code 3"),
    "unhealthy": (
        ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"],
        "not healthy within its health timeout",
    ),
}


class World:
    def __init__(self, podman: PodmanService, v1: str, v2: str) -> None:
        self.podman, self.v1, self.v2 = podman, v1, v2

    def run(self, image: str, name: str, port: int) -> None:
        images.start_container(
            self.podman, image, name=name, **images.web_container_kwargs(self.podman, port=port, labels={"op": "x"})
        )
        images.wait_http(f"http://127.0.0.1:{port}/health")

    def deployer(self, name: str, port: int, **extra: Any) -> DockerDeployer:
        return DockerDeployer(
            DockerDeployer.Options.model_validate(
                {
                    "type": "docker",
                    "docker_host": self.podman.docker_host,
                    "health_timeout": 3,
                    "port_release_timeout": 5,
                    "stop_timeout": 2,
                    "version_label": "app.version",
                    "containers": [{"name": name, "health_url": f"http://127.0.0.1:{port}/health"}],
                    **extra,
                }
            )
        )

    def ours(self, name: str) -> list[dict[str, Any]]:
        """Every container named ``name`` or ``name__pre_*`` (running or not)."""
        found = self.podman.client().api.containers(all=True)
        return [
            c
            for c in found
            if any(n.lstrip("/") == name or n.lstrip("/").startswith(f"{name}__pre_") for n in c["Names"])
        ]

    def running(self, name: str) -> list[str]:
        return [c["Names"][0].lstrip("/") for c in self.ours(name) if c["State"] == "running"]


@pytest.fixture(scope="module")
def world(podman: PodmanService) -> Iterator[World]:
    v1 = images.build_web_image(podman, images.session_tag(podman, "pweb", "v1"), version="v1")
    v2 = images.build_web_image(podman, images.session_tag(podman, "pweb", "v2"), version="v2")
    try:
        yield World(podman, v1, v2)
    finally:
        podman.remove_containers()


async def green_spec(world: World, deployer: DockerDeployer, name: str, port: int) -> JSON:
    """The spec v1 ran with; then the operator replaces it by v2 under the same name."""
    world.run(world.v1, name, port)
    spec = await deployer.capture()
    assert spec is not None
    world.podman.client().api.remove_container(name, force=True)
    world.run(world.v2, name, port)
    return spec


def version(port: int) -> bytes:
    return images.wait_http(f"http://127.0.0.1:{port}/version", timeout=5).strip()


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_failing_green_container_puts_the_previous_one_back_serving(world: World, failure: str) -> None:
    name, port = world.podman.name("pb"), images.free_port()
    deployer = world.deployer(name, port)
    try:
        spec = await green_spec(world, deployer, name, port)
        cmd, reason = FAILURES[failure]
        spec[name]["config"]["Cmd"] = cmd
        with pytest.raises(BackendError) as info:
            await deployer.deploy(Release(service="web", version="v1", digest=world.v1, spec=spec), incident="f1")
        text = str(info.value)
        print(f"\n{failure}: {text}")
        assert reason in text and f"is back under {name}, serving" in text
        assert world.running(name) == [name] and len(world.ours(name)) == 1  # the failed one is gone
        assert version(port) == b"v2"
        # roll-forward of that failed revert: the previous container already serves
        forward = await deployer.roll_forward(
            "f1", Release(service="web", version="v2", digest=world.v2), incident="f2"
        )
        assert forward["noop"] is True and version(port) == b"v2" and world.running(name) == [name]
    finally:
        await deployer.close()
        world.podman.remove_containers()


async def test_put_back_waits_for_the_port_and_pages_when_nothing_serves(world: World) -> None:
    """The port is held while the old container is stopped: released after 1 s it starts again; held for
    good, the error says NO RUNNING CONTAINER, and a roll-forward once the port is free brings it back."""
    name, port = world.podman.name("pb"), images.free_port()
    deployer = world.deployer(name, port, port_release_timeout=1)
    holder: list[socket.socket] = []

    def hold(op: str) -> None:
        if op == "stop" and not holder:  # the old container stopped: take its port before anyone else
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            holder.append(sock)

    try:
        spec = await green_spec(world, deployer, name, port)
        deployer.engine.hook = hold
        with pytest.raises(BackendError) as info:
            await deployer.deploy(Release(service="web", version="v1", digest=world.v1, spec=spec), incident="h1")
        text = str(info.value)
        print(f"\nport held for good: {text}")
        assert "NO RUNNING CONTAINER" in text and "address already in use" in text.lower()
        assert world.running(name) == []
        holder.pop().close()
        deployer.engine.hook = None
        forward = await deployer.roll_forward(
            "h1", Release(service="web", version="v2", digest=world.v2), incident="h2"
        )
        assert forward["noop"] is True and version(port) == b"v2" and world.running(name) == [name]

        # the port freed 1 s after the stop (Podman releasing it late): the put-back waits, then serves
        world.podman.client().api.remove_container(name, force=True)
        spec = await green_spec(world, deployer, name, port)
        spec[name]["config"]["Cmd"] = FAILURES["exits"][0]
        deployer = world.deployer(name, port, port_release_timeout=10)

        def hold_briefly(op: str) -> None:
            hold(op)
            if op == "stop":
                threading.Timer(1.0, holder[0].close).start()

        deployer.engine.hook = hold_briefly
        started = time.monotonic()
        with pytest.raises(BackendError) as info:
            await deployer.deploy(Release(service="web", version="v1", digest=world.v1, spec=spec), incident="h3")
        assert f"is back under {name}, serving" in str(info.value), str(info.value)
        assert version(port) == b"v2" and time.monotonic() - started < 20
    finally:
        for sock in holder:
            sock.close()
        await deployer.close()
        world.podman.remove_containers()


async def test_status_of_what_serves(world: World) -> None:
    name, port = world.podman.name("pb"), images.free_port()
    deployer = world.deployer(name, port)
    try:
        assert (await deployer.serving())["serving"] == []
        await asyncio.to_thread(world.run, world.v2, name, port)
        body = await deployer.serving()
        assert body["serving"] == [name] and body["containers"][name]["image_id"] == world.v2
        assert body["note"] is None
        assert "serving:      " + name in render.status(
            {"mode": "auto", "services": {"web": {**SVC, "containers": body}}}
        )
        world.podman.client().api.stop(name, timeout=2)
        body = await deployer.serving()
        assert body["note"] == "NO RUNNING CONTAINER"
        assert "serving:      NO RUNNING CONTAINER" in render.status(
            {"mode": "auto", "services": {"web": {**SVC, "containers": body}}}
        )
    finally:
        await deployer.close()
        world.podman.remove_containers()
