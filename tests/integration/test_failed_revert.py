"""A revert whose green container exits (in-process daemon, real Podman): the incident fails with the
precise reason and says the previous container serves again; `status` shows it serving; `rollbackd
rollforward` of that incident then resolves with that container still the one serving."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support import images
from tests.support.daemon import Api, running_daemon, write_config
from tests.support.podman import PodmanService
from tests.support.podman import podman as podman

pytestmark = pytest.mark.integration


async def test_a_failed_revert_leaves_the_previous_container_serving_and_rolls_forward(
    tmp_path: Path, podman: PodmanService
) -> None:
    v1 = images.build_web_image(podman, images.session_tag(podman, "fweb", "v1"), version="v1")
    v2 = images.build_web_image(podman, images.session_tag(podman, "fweb", "v2"), version="v2")
    name, port = podman.name("fweb"), images.free_port()
    svc = {
        "policy": {"confirm": "off"},
        "releases": {"data": "optional"},
        "plan": [{"type": "deploy.revert"}],
        "deploy": {
            "type": "docker",
            "docker_host": podman.docker_host,
            "version_label": "app.version",
            "health_timeout": 5,
            "stop_timeout": 2,
            "containers": [{"name": name, "health_url": f"http://127.0.0.1:{port}/health"}],
        },
    }
    cfg = write_config(tmp_path, services={"rag": svc})
    kwargs = images.web_container_kwargs(podman, port=port)
    try:
        async with running_daemon(cfg) as d:
            api = Api(d.url)

            async def call(*args: Any) -> Any:
                return await asyncio.to_thread(api.call, *args)

            await asyncio.to_thread(images.start_container, podman, v1, name=name, **kwargs)
            await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/health")
            release = (await call("POST", "/v1/releases", {"version": "v1", "digest": v1}))[1]
            await call("POST", "/v1/releases/v1/green", {"reason": "fine"})
            # the green spec as recorded, but its command now exits at once (a broken entrypoint)
            key = f"release_spec:rag:{release['id']}"
            spec = await d.core.store.get_kv(key)
            spec[name]["config"]["Cmd"] = ["/bin/sh", "-c", "exit 7"]
            await d.core.store.set_kv(key, spec)
            podman.client().api.remove_container(name, force=True)
            await asyncio.to_thread(images.start_container, podman, v2, name=name, **kwargs)
            await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/health")

            status, inc = await call("POST", "/v1/trigger", {"reason": "bad answers"})
            assert status == 202, inc
            assert await d.core.runner.wait(inc["id"]) == "failed"
            body = (await call("GET", f"/v1/incidents/{inc['id']}"))[1]
            error = body["steps"][0]["error"]
            print("\n" + error)
            assert "exited (code 7" in error and f"is back under {name}, serving" in error
            rag = (await call("GET", "/v1/status"))[1]["services"]["rag"]
            assert rag["containers"]["serving"] == [name] and rag["containers"]["containers"][name]["image_id"] == v2
            assert (await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/version")).strip() == b"v2"

            status, fwd = await call("POST", f"/v1/incidents/{inc['id']}/rollforward", {"reason": "keep v2"})
            assert status == 202, fwd
            assert await d.core.runner.wait(fwd["id"]) == "resolved"
            assert (await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/version")).strip() == b"v2"
            running = [c["Names"][0].lstrip("/") for c in podman.client().api.containers() if name in c["Names"][0]]
            assert running == [name], running
    finally:
        podman.remove_containers()
