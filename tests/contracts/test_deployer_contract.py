"""The Deployer contract for the command and http backends (docker: tests/integration/test_docker_deployer.py,
against real Podman): deploy makes the release current, a second deploy is a no-op, wait_healthy honours
its deadline, roll_forward deploys the release it is given, errors are BackendErrors."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollbackd.deploy import render
from rollbackd.deploy.command import CommandDeployer
from rollbackd.deploy.http import HttpDeployer
from rollbackd.errors import BackendError
from rollbackd.records import Release
from tests.support.http_stub import JsonHandler, serve

V1 = Release(service="rag", version="v1", image="reg/rag:v1", digest="sha256:1")
V2 = Release(service="rag", version="v2", image="reg/rag:v2", digest="sha256:2")


class _CD(JsonHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_json(200 if self.server.healthy else 503, {})
        else:
            self.send_json(200, {"deployment": {"version": self.server.version}})

    def do_POST(self) -> None:
        body = self.read_json()
        self.server.dispatches.append((self.path, body))
        self.server.version = body["inputs"]["version"]
        self.send_json(self.server.status, {"queued": True})


@pytest.fixture
def cd() -> Iterator[Any]:
    with serve(_CD, version="v2", dispatches=[], healthy=True, status=202) as server:
        yield server


class DeployerContract:
    async def test_deploy_then_noop(self, deployer: Any) -> None:
        first = await deployer.deploy(V1, incident="i1")
        assert first["noop"] is False
        assert (await deployer.current()).version == "v1"
        assert (await deployer.deploy(V1, incident="i1"))["noop"] is True

    async def test_wait_healthy_honours_the_deadline(self, deployer: Any, cd: Any) -> None:
        assert (await deployer.wait_healthy(time.monotonic() + 5))["healthy_after_s"] < 1
        cd.healthy = False
        started = time.monotonic()
        with pytest.raises(BackendError, match="not healthy before the deadline") as info:
            await deployer.wait_healthy(time.monotonic() + 0.5)
        assert time.monotonic() - started < 2.5 and info.value.retryable
        assert not await deployer.healthy()

    async def test_roll_forward_deploys_the_release_it_replaced(self, deployer: Any) -> None:
        await deployer.deploy(V1, incident="i1")
        await deployer.roll_forward("i1", V2, incident="i2")
        assert (await deployer.current()).version == "v2"
        with pytest.raises(BackendError):
            await deployer.roll_forward("i1", None, incident="i3")


class TestHttp(DeployerContract):
    @pytest.fixture
    def deployer(self, cd: Any) -> HttpDeployer:
        return HttpDeployer(
            HttpDeployer.Options.model_validate(
                {
                    "type": "http",
                    "url": f"{cd.url}/dispatch/{{incident}}",
                    "current_url": f"{cd.url}/current",
                    "current_field": "deployment.version",
                    "health_url": f"{cd.url}/health",
                    "body": {"ref": "main", "inputs": {"version": "{version}", "image": "{image}@{digest}"}},
                }
            )
        )

    async def test_body_is_a_template(self, deployer: HttpDeployer, cd: Any) -> None:
        await deployer.deploy(V1, incident="i9")
        assert cd.dispatches == [
            ("/dispatch/i9", {"ref": "main", "inputs": {"version": "v1", "image": "reg/rag:v1@sha256:1"}})
        ]

    async def test_a_refused_dispatch_names_the_status(self, deployer: HttpDeployer, cd: Any) -> None:
        cd.status = 422
        with pytest.raises(BackendError, match="answered 422"):
            await deployer.deploy(V1, incident="i1")


class TestCommand(DeployerContract):
    @pytest.fixture
    def deployer(self, cd: Any, tmp_path: Path) -> CommandDeployer:
        state = tmp_path / "version"
        state.write_text("v2")
        write = [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(state), "{version}"]
        return CommandDeployer(
            CommandDeployer.Options.model_validate(
                {
                    "type": "command",
                    "argv": write,
                    "current_argv": ["/bin/cat", str(state)],
                    "health_url": f"{cd.url}/health",
                }
            )
        )

    async def test_argv_is_never_a_shell(self, tmp_path: Path) -> None:
        evil = Release(service="rag", version="v1; touch /tmp/pwned", digest="sha256:1")
        out = tmp_path / "argv"
        dep = CommandDeployer(
            CommandDeployer.Options.model_validate(
                {
                    "type": "command",
                    "argv": [
                        sys.executable,
                        "-c",
                        "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                        str(out),
                        "{version}",
                    ],
                }
            )
        )
        await dep.deploy(evil, incident="i1")
        assert out.read_text() == "v1; touch /tmp/pwned"
        assert render(["{image}", "{digest}"], {"image": "a", "digest": "b"}) == ["a", "b"]


async def test_wait_healthy_fails_without_a_running_server(tmp_path: Path) -> None:
    dep = CommandDeployer(
        CommandDeployer.Options.model_validate(
            {"type": "command", "argv": ["/bin/true"], "health_url": "http://127.0.0.1:1/health"}
        )
    )
    with pytest.raises(BackendError, match=r"127\.0\.0\.1:1"):
        await dep.wait_healthy(time.monotonic() + 0.3)
