"""The docker canary against real Podman: ``<name>__canary`` runs the new release's image with the live
container's operator settings, published on the rollout's canary port, beside the untouched live one;
deploying again keeps it, a new image replaces it, removing it twice is fine."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest

from rollbackd.deploy.docker import DockerDeployer
from rollbackd.records import Release
from rollbackd.rollout.config import Canary
from rollbackd.rollout.docker import DockerCanary
from tests.support import images
from tests.support.podman import PodmanService
from tests.support.podman import podman as podman

pytestmark = pytest.mark.integration


def version_of(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=2) as resp:
        return str(resp.read().decode().strip())


@pytest.fixture
def live(podman: PodmanService) -> Iterator[tuple[str, int, str, str, str]]:
    v1 = images.build_web_image(podman, images.session_tag(podman, "cweb", "v1"), version="v1")
    v2 = images.build_web_image(podman, images.session_tag(podman, "cweb", "v2"), version="v2")
    v3 = images.build_web_image(podman, images.session_tag(podman, "cweb", "v3"), version="v3")
    port = images.free_port()
    name = podman.name("web")
    images.start_container(
        podman, v1, name=name, environment={"USER_SET": "1"}, **images.web_container_kwargs(podman, port=port)
    )
    images.wait_http(f"http://127.0.0.1:{port}/version")
    try:
        yield name, port, v1, v2, v3
    finally:
        podman.remove_containers()


async def test_canary_runs_beside_the_live_container(
    podman: PodmanService, live: tuple[str, int, str, str, str]
) -> None:
    name, port, _v1, v2, v3 = live
    canary_port = images.free_port()
    deployer = DockerDeployer(
        DockerDeployer.Options.model_validate(
            {
                "type": "docker",
                "docker_host": podman.docker_host,
                "containers": [{"name": name, "health_url": f"http://127.0.0.1:{port}/health"}],
            }
        )
    )
    canary = DockerCanary(
        deployer,
        Canary(
            port=canary_port,
            health_url=f"http://127.0.0.1:{canary_port}/health",
            timeout=30,
            env={"CANARY_PORT": "{port}"},
        ),
    )
    release = Release(service="web", version="v2", digest=v2)
    try:
        out = await canary.deploy(release, rollout_id="r1", service="web")
        assert out["action"] == "created" and out["canary"] == f"{name}__canary"
        assert version_of(canary_port) == "v2" and version_of(port) == "v1"  # beside, not instead
        inspected = podman.client().api.inspect_container(f"{name}__canary")
        env = inspected["Config"]["Env"]
        assert "USER_SET=1" in env and f"CANARY_PORT={canary_port}" in env  # operator settings kept
        assert (await canary.deploy(release, rollout_id="r1", service="web"))["action"] == "kept"
        out = await canary.deploy(Release(service="web", version="v3", digest=v3), rollout_id="r1", service="web")
        assert out["action"] == "created" and version_of(canary_port) == "v3"
        assert (await canary.remove(release, rollout_id="r1", service="web"))["removed"] is True
        assert (await canary.remove(release, rollout_id="r1", service="web"))["removed"] is False
        assert version_of(port) == "v1"
        names = [c.name for c in podman.client().containers.list(all=True)]
        assert f"{name}__canary" not in names and name in names
    finally:
        await deployer.close()
