"""The docker deployer against real Podman serving the Docker API (DOCKER_HOST of the session's service).

v1 is good, v2 is bad (unhealthy; its image also sets MODEL=big and a label of its own). A container of
v2 carries every kind of operator config; reverting it to v1 must keep all of it and none of v2's
image settings. Timings (the unavailability window seen by a client polling every 20 ms) are printed.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import Healthcheck, Mount

from rollbackd.deploy.docker import DockerDeployer
from rollbackd.errors import BackendError
from rollbackd.records import Release
from tests.support import images
from tests.support.podman import PodmanService
from tests.support.podman import podman as podman
from tests.support.poller import Poller

pytestmark = pytest.mark.integration
COMMAND = ["/bin/sh", "-c", "exec /bin/sh /start.sh"]


class World:
    def __init__(self, podman: PodmanService, v1: str, v2: str, network: str, mount_dir: Path) -> None:
        self.podman, self.v1, self.v2, self.network, self.mount_dir = podman, v1, v2, network, mount_dir

    def release(self, version: str) -> Release:
        return Release(service="web", version=version, image=None, digest=self.v1 if version == "v1" else self.v2)

    def run(self, image: str, *, port: int | None = None, start: bool = True) -> tuple[str, int]:
        port = port or images.free_port()
        name = self.podman.name("web")
        kwargs = images.web_container_kwargs(self.podman, port=port, labels={"op.label": "kept"})
        container = self.podman.client().containers.create(
            image,
            name=name,
            environment={"USER_SET": "1"},
            network=self.network,
            command=COMMAND,
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
            mounts=[Mount("/data", str(self.mount_dir), type="bind", read_only=True)],
            healthcheck=Healthcheck(test=["CMD", "/bin/true"], interval=30_000_000_000),
            **kwargs,
        )
        if start:
            container.start()
            images.wait_http(f"http://127.0.0.1:{port}/version")
        return name, port

    def deployer(self, name: str, port: int, **extra: Any) -> DockerDeployer:
        opts = {
            "type": "docker",
            "docker_host": self.podman.docker_host,
            "health_timeout": 20,
            "version_label": "app.version",
            "containers": [{"name": name, "health_url": f"http://127.0.0.1:{port}/health"}],
            **extra,
        }
        return DockerDeployer(DockerDeployer.Options.model_validate(opts))


@pytest.fixture(scope="module")
def world(podman: PodmanService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    v1 = images.build_web_image(podman, images.session_tag(podman, "dweb", "v1"), version="v1")
    v2 = images.build_web_image(
        podman,
        images.session_tag(podman, "dweb", "v2"),
        version="v2",
        healthy=False,
        env={"MODEL": "big"},
        labels={"v2.only": "yes"},
    )
    net = podman.client().networks.create(podman.name("net"), labels=podman.labels)
    mount_dir = tmp_path_factory.mktemp("mount")
    (mount_dir / "f").write_text("x")
    try:
        yield World(podman, v1, v2, net.name, mount_dir)
    finally:
        podman.remove_containers()
        net.remove()


def version_of(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=2) as resp:
        return str(resp.read().decode().strip())


def inspect(podman: PodmanService, name: str) -> dict[str, Any]:
    result: dict[str, Any] = podman.client().api.inspect_container(name)
    return result


async def test_revert_keeps_operator_config_and_drops_bad_image_settings(world: World) -> None:
    name, port = world.run(world.v2)
    deployer = world.deployer(name, port)
    try:
        before = await deployer.current()
        assert before.version == "v2" and before.image_id == world.v2
        with Poller(port) as poller:
            started = time.monotonic()
            result = await deployer.deploy(world.release("v1"), incident="inc1")
            health = await deployer.wait_healthy(time.monotonic() + 20)
            to_healthy = time.monotonic() - started
        print(
            f"\nrevert v2->v1: unavailable {poller.unavailable * 1000:.0f} ms seen by a 20 ms poller "
            f"({poller.failures} failed requests), step start to healthy {to_healthy:.3f}s, "
            f"stop+start {result['containers'][0]['stop_start_s']}s, {health}"
        )
        assert result["containers"][0]["action"] == "recreated"
        assert version_of(port) == "v1"
        new = inspect(world.podman, name)
        cfg, host = new["Config"], new["HostConfig"]
        assert new["Image"] == world.v1
        assert "USER_SET=1" in cfg["Env"] and "APP_VERSION=v1" in cfg["Env"]
        assert not any(e.startswith("MODEL=") for e in cfg["Env"]), cfg["Env"]
        assert cfg["Labels"]["op.label"] == "kept" and cfg["Labels"]["app.version"] == "v1"
        assert "v2.only" not in cfg["Labels"]
        assert cfg["Cmd"] == COMMAND
        assert cfg["Healthcheck"]["Test"] == ["CMD", "/bin/true"]
        assert host["PortBindings"]["8080/tcp"][0]["HostPort"] == str(port)
        assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
        assert any(
            m["Destination"] == "/data" and m["Source"] == str(world.mount_dir) and not m["RW"] for m in new["Mounts"]
        )
        assert world.network in new["NetworkSettings"]["Networks"]
        kept = inspect(world.podman, f"{name}__pre_inc1")
        assert kept["Image"] == world.v2 and not kept["State"]["Running"]
        assert (await deployer.current()).version == "v1"

        # the same revert again is a no-op (image IDs compared, never names)
        again = await deployer.deploy(world.release("v1"), incident="inc1")
        assert again["noop"] is True

        # roll forward: the kept v2 container runs again, the v1 one is kept in turn
        forward = await deployer.roll_forward("inc1", world.release("v2"), incident="inc2")
        assert forward["containers"][0]["action"] == "rolled_forward"
        await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/version")
        assert version_of(port) == "v2"
        assert inspect(world.podman, name)["Image"] == world.v2
        assert inspect(world.podman, f"{name}__pre_inc2")["Image"] == world.v1
        assert (await deployer.roll_forward("inc1", world.release("v2"), incident="inc2"))["noop"] is True
    finally:
        await deployer.close()


async def test_revert_when_v1_already_runs_is_a_noop(world: World) -> None:
    name, port = world.run(world.v1)
    deployer = world.deployer(name, port)
    try:
        created = inspect(world.podman, name)["Id"]
        result = await deployer.deploy(world.release("v1"), incident="inc3")
        assert result["noop"] is True
        assert inspect(world.podman, name)["Id"] == created
        with pytest.raises(docker.errors.NotFound):
            inspect(world.podman, f"{name}__pre_inc3")
    finally:
        await deployer.close()


async def test_resume_after_rename_creates_from_the_kept_container(world: World) -> None:
    """A crash right after the rename: the next attempt finds only `<name>__pre_<incident>`."""
    name, port = world.run(world.v2)
    world.podman.client().api.rename(name, f"{name}__pre_inc4")
    deployer = world.deployer(name, port)
    try:
        await deployer.deploy(world.release("v1"), incident="inc4")
        await deployer.wait_healthy(time.monotonic() + 20)
        assert version_of(port) == "v1"
        assert "USER_SET=1" in inspect(world.podman, name)["Config"]["Env"]
    finally:
        await deployer.close()


async def test_image_missing_names_container_and_image(world: World) -> None:
    name, port = world.run(world.v2)
    deployer = world.deployer(name, port)
    missing = Release(service="web", version="v9", image="localhost/no-such-image:v9")
    try:
        with pytest.raises(BackendError) as info:
            await deployer.deploy(missing, incident="inc5")
        text = str(info.value)
        print(f"\nimage missing: {text}")
        assert "image missing" in text and name in text and "localhost/no-such-image:v9" in text
        assert version_of(port) == "v2"  # nothing was touched
    finally:
        await deployer.close()


async def test_name_in_use_names_container_and_image(world: World) -> None:
    name, port = world.run(world.v2)
    other, _ = world.run(world.v1, start=False)  # a container in the way, renamed to the kept name
    world.podman.client().api.rename(other, f"{name}__pre_inc6")
    deployer = world.deployer(name, port)
    try:
        with pytest.raises(BackendError) as info:
            await deployer.deploy(world.release("v1"), incident="inc6")
        text = str(info.value)
        print(f"\nname in use: {text}")
        assert "name in use" in text and name in text and world.v1 in text
        assert version_of(port) == "v2"
    finally:
        await deployer.close()


async def test_port_taken_names_container_and_image_and_puts_the_old_back(world: World) -> None:
    name, port = world.run(world.v2, start=False)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    deployer = world.deployer(name, port)
    try:
        with pytest.raises(BackendError) as info:
            await deployer.deploy(world.release("v1"), incident="inc7")
        text = str(info.value)
        print(f"\nport taken: {text}")
        assert "port taken" in text and name in text and world.v1 in text
        assert inspect(world.podman, name)["Image"] == world.v2  # the old one is back under its name
    finally:
        blocker.close()
        await deployer.close()


async def test_daemon_unreachable_names_the_host(world: World, tmp_path: Path) -> None:
    opts = {
        "type": "docker",
        "docker_host": f"unix://{tmp_path}/none.sock",
        "containers": [{"name": "web", "health_url": "http://127.0.0.1:1/health"}],
    }
    deployer = DockerDeployer(DockerDeployer.Options.model_validate(opts))
    with pytest.raises(BackendError) as info:
        await deployer.deploy(world.release("v1"), incident="inc8")
    text = str(info.value)
    print(f"\nunreachable: {text}")
    assert "daemon unreachable" in text and "none.sock" in text and "web" in text
    assert info.value.retryable
    await deployer.close()
