"""Each sub-operation of a revert is idempotent and retried (real Podman): a transport error before or
after any of create, stop, rename, start (the answer lost) is retried to the same end state; a crash
between any two of them (raised in-process, and a real kill -9 of a process running the deployer) is
resumed by the next attempt to exactly one container serving the green release."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from rollbackd.deploy.docker import DockerDeployer
from rollbackd.deploy.ledger import OBSERVE_CACHE_S
from rollbackd.errors import FencedError
from rollbackd.records import Release
from rollbackd.state import fence
from tests.support import images
from tests.support.daemon import DaemonProcess, write_config
from tests.support.podman import PodmanService
from tests.support.podman import podman as podman

pytestmark = pytest.mark.integration
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_METHODS = {"create": "create_container_from_config", "stop": "stop", "rename": "rename", "start": "start"}
CHILD = """
import asyncio, json, os, signal, sys
sys.path[:0] = [os.path.join(sys.argv[1], "daemon"), sys.argv[1]]
from rollbackd.deploy.docker import DockerDeployer
from rollbackd.records import Release
args = json.loads(sys.argv[2])
deployer = DockerDeployer(DockerDeployer.Options.model_validate(args["options"]))
seen = []
def hook(op):
    seen.append(op)
    if len(seen) == args["after"]:
        os.kill(os.getpid(), signal.SIGKILL)
deployer.engine.hook = hook
asyncio.run(deployer.deploy(Release(service="web", version="v1", digest=args["v1"]), incident="k1"))
"""


class Crash(BaseException):
    """A crash between two sub-operations (not an Exception: nothing in the deployer may catch it)."""


class World:
    def __init__(self, podman: PodmanService, v1: str, v2: str) -> None:
        self.podman, self.v1, self.v2 = podman, v1, v2

    def start_v2(self) -> tuple[str, int]:
        name, port = self.podman.name("rs"), images.free_port()
        images.start_container(self.podman, self.v2, name=name, **images.web_container_kwargs(self.podman, port=port))
        images.wait_http(f"http://127.0.0.1:{port}/version")
        return name, port

    def options(self, name: str, port: int) -> dict[str, Any]:
        return {
            "type": "docker",
            "docker_host": self.podman.docker_host,
            "health_timeout": 10,
            "stop_timeout": 2,
            "api_backoff": 0.05,
            "version_label": "app.version",
            "containers": [{"name": name, "health_url": f"http://127.0.0.1:{port}/health"}],
        }

    def deployer(self, name: str, port: int) -> DockerDeployer:
        return DockerDeployer(DockerDeployer.Options.model_validate(self.options(name, port)))

    def state(self, name: str) -> dict[str, tuple[str, str]]:
        """name -> (image, state) of ``name`` and its kept copies."""
        found = self.podman.client().api.containers(all=True)
        return {
            c["Names"][0].lstrip("/"): (c["ImageID"] if "ImageID" in c else c["Image"], c["State"])
            for c in found
            if c["Names"][0].lstrip("/").split("__pre_")[0] == name
        }

    def assert_one_serving_v1(self, name: str, port: int, incident: str) -> None:
        state = self.state(name)
        running = [n for n, (_, s) in state.items() if s == "running"]
        assert running == [name], state
        assert set(state) == {name, f"{name}__pre_{incident}"}, state
        assert images.wait_http(f"http://127.0.0.1:{port}/version", timeout=5).strip() == b"v1"


@pytest.fixture(scope="module")
def world(podman: PodmanService) -> Iterator[World]:
    v1 = images.build_web_image(podman, images.session_tag(podman, "rweb", "v1"), version="v1")
    v2 = images.build_web_image(podman, images.session_tag(podman, "rweb", "v2"), version="v2")
    try:
        yield World(podman, v1, v2)
    finally:
        podman.remove_containers()


def flaky(real: Callable[..., Any], *, lose_answer: bool) -> Callable[..., Any]:
    """The first call fails with a transport error: before reaching the engine, or after (answer lost)."""
    calls: list[int] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            if lose_answer:
                real(*args, **kwargs)
            raise requests.ConnectionError("connection reset by peer (injected)")
        return real(*args, **kwargs)

    return call


@pytest.mark.parametrize("lose_answer", [False, True], ids=["refused", "answer_lost"])
@pytest.mark.parametrize("op", sorted(API_METHODS))
async def test_a_transport_error_at_any_sub_operation_is_retried(world: World, op: str, lose_answer: bool) -> None:
    name, port = world.start_v2()
    deployer = world.deployer(name, port)
    api = deployer.api()
    method = API_METHODS[op]
    setattr(api, method, flaky(getattr(api, method), lose_answer=lose_answer))
    try:
        result = await deployer.deploy(Release(service="web", version="v1", digest=world.v1), incident="t1")
        assert result["containers"][0]["action"] == "recreated"
        world.assert_one_serving_v1(name, port, "t1")
    finally:
        await deployer.close()
        world.podman.remove_containers()


@pytest.mark.parametrize("after", [1, 2, 3, 4], ids=["rename", "create", "stop", "start"])
async def test_a_crash_between_sub_operations_resumes_to_one_container_serving(world: World, after: int) -> None:
    name, port = world.start_v2()
    deployer = world.deployer(name, port)
    seen: list[str] = []

    def hook(op: str) -> None:
        seen.append(op)
        if len(seen) == after:
            raise Crash(op)

    deployer.engine.hook = hook
    try:
        with pytest.raises(Crash):
            await deployer.deploy(Release(service="web", version="v1", digest=world.v1), incident="c1")
        assert seen == ["rename", "create", "stop", "start"][:after]
        await deployer.close()
        deployer = world.deployer(name, port)  # the resumed attempt: a new process would start like this
        await deployer.deploy(Release(service="web", version="v1", digest=world.v1), incident="c1")
        world.assert_one_serving_v1(name, port, "c1")
    finally:
        await deployer.close()
        world.podman.remove_containers()


@pytest.mark.parametrize("after", [2, 3])
def test_a_kill_9_between_sub_operations_resumes(world: World, after: int) -> None:
    name, port = world.start_v2()
    args = {"options": world.options(name, port), "v1": world.v1, "after": after}
    proc = subprocess.run([sys.executable, "-c", CHILD, REPO, json.dumps(args)], timeout=60, check=False)
    assert proc.returncode == -9
    deployer = world.deployer(name, port)
    try:
        asyncio.run(deployer.deploy(Release(service="web", version="v1", digest=world.v1), incident="k1"))
        world.assert_one_serving_v1(name, port, "k1")
    finally:
        asyncio.run(deployer.close())
        world.podman.remove_containers()


def test_kill_9_of_the_daemon_during_the_revert_resumes_to_one_container(world: World, tmp_path: Path) -> None:
    """The real daemon killed -9 at several moments of its revert, restarted each time: it ends resolved
    with exactly one container serving v1 (the kept v2 stopped beside it)."""
    name, port = world.podman.name("rs"), images.free_port()
    images.start_container(world.podman, world.v1, name=name, **images.web_container_kwargs(world.podman, port=port))
    images.wait_http(f"http://127.0.0.1:{port}/health")
    # retries: a kill -9 still counts as an attempt in this runner (the incident engine's concern, not the step's)
    svc = {
        "policy": {"confirm": "off"},
        "releases": {"data": "optional"},
        "plan": [{"type": "deploy.revert", "retries": 3}],
        "deploy": {**world.options(name, port), "stop_timeout": 1},
    }
    daemon = DaemonProcess(write_config(tmp_path, services={"web": svc}))
    try:
        daemon.start()
        assert daemon.api.call("POST", "/v1/releases/v1/green", {"service": "web", "reason": "ok"})[0] == 200
        world.podman.client().api.remove_container(name, force=True)
        images.start_container(
            world.podman, world.v2, name=name, **images.web_container_kwargs(world.podman, port=port)
        )
        images.wait_http(f"http://127.0.0.1:{port}/health")
        time.sleep(OBSERVE_CACHE_S)  # the decision-time inspect may be cached that long (readyz asked)
        status, inc = daemon.api.call("POST", "/v1/trigger", {"service": "web", "reason": "bad"})
        assert status == 202, inc
        for delay in (0.15, 0.05, 0.3):
            time.sleep(delay)
            daemon.kill9()
            daemon.start()
        final = daemon.api.wait_incident(inc["id"], ("resolved", "failed"))
        assert final["state"] == "resolved", final
        world.assert_one_serving_v1(name, port, inc["id"])
    finally:
        daemon.stop()
        world.podman.remove_containers()


class Cancellable:
    """A deployer whose revert thread can be held at a sub-operation, and whose end can be awaited."""

    def __init__(self, deployer: DockerDeployer, hold_at: str) -> None:
        self.deployer, self.hold_at, self.seen = deployer, hold_at, list[str]()
        self.holding, self.go_on, self.thread_done = threading.Event(), threading.Event(), threading.Event()
        deployer.engine.hook = self._hook
        recreate = deployer._recreate

        def tracked(*args: Any) -> Any:
            try:
                return recreate(*args)
            finally:
                self.thread_done.set()

        deployer._recreate = tracked  # type: ignore[method-assign]

    def _hook(self, op: str) -> None:
        self.seen.append(op)
        if op == self.hold_at:
            self.holding.set()
            self.go_on.wait(30)

    async def cancel_while_held(self, release: Release, incident: str, *, after: float = 0.0) -> None:
        """Start the revert, cancel it ``after`` seconds past the hold point (while held, unless ``go_on``
        was set before), then let the thread go on to its end."""
        task = asyncio.create_task(self.deployer.deploy(release, incident=incident))
        assert await asyncio.to_thread(self.holding.wait, 30)
        await asyncio.sleep(after)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        self.go_on.set()
        assert await asyncio.to_thread(self.thread_done.wait, 60)

    async def next_owner_finishes(self, world: World, name: str, port: int, release: Release, incident: str) -> None:
        """The new leader (or the resumed attempt), with a deployer of its own, ends with one container on v1."""
        await self.deployer.close()
        next_owner = world.deployer(name, port)
        await next_owner.deploy(release, incident=incident)
        await next_owner.close()
        world.assert_one_serving_v1(name, port, incident)


async def test_a_cancelled_revert_makes_no_engine_call_after_the_one_in_flight(world: World) -> None:
    """A leader that steps down (or an abort) cancels the step, but cannot stop its thread. Before, the
    thread went on with the stop and the start of the swap while the new leader resumed the same revert
    on the same engine. Now nothing follows the call in flight, and the next owner finishes the revert."""
    name, port = world.start_v2()
    held = Cancellable(world.deployer(name, port), hold_at="create")
    release = Release(service="web", version="v1", digest=world.v1)
    try:
        await held.cancel_while_held(release, "x1")
        assert held.seen == ["rename", "create"]
        state = world.state(name)
        assert state[f"{name}__pre_x1"] == (world.v2, "running"), state  # v2 still serves, nothing stopped it
        assert state[name][1] != "running", state
        await held.next_owner_finishes(world, name, port, release, "x1")
    finally:
        world.podman.remove_containers()


async def test_a_revert_cancelled_during_its_health_wait_puts_nothing_back(world: World) -> None:
    """Cancelled while it waits for the new container's health (here: never healthy), the thread stops
    waiting. Before, it waited out the health timeout and then put the previous container back: it
    removed the container the new leader was judging."""
    name, port = world.start_v2()
    closed = images.free_port()
    options = {**world.options(name, port), "health_timeout": 3, "health_interval": 0.1}
    options["containers"] = [{"name": name, "health_url": f"http://127.0.0.1:{closed}/health"}]
    held = Cancellable(DockerDeployer(DockerDeployer.Options.model_validate(options)), hold_at="start")
    release = Release(service="web", version="v1", digest=world.v1)
    try:
        held.go_on.set()  # nothing to hold: the cancel comes during the health wait that follows the start
        await held.cancel_while_held(release, "h1", after=0.5)
        await asyncio.sleep(3.5)  # past the health timeout: the old code put v2 back by now
        assert held.seen == ["rename", "create", "stop", "start"]
        state = world.state(name)
        assert state[name] == (world.v1, "running"), state
        assert state[f"{name}__pre_h1"][1] != "running", state
        await held.next_owner_finishes(world, name, port, release, "h1")
    finally:
        world.podman.remove_containers()


async def test_a_retry_waits_until_the_cancelled_attempts_call_in_flight_ends(world: World) -> None:
    """A step that timed out is retried at once, in the same process. Its cancelled attempt's thread may
    still be inside an engine call: the retry makes no call before that thread has stopped, so the two
    attempts never interleave on one container; then it finishes the revert."""
    name, port = world.start_v2()
    held = Cancellable(world.deployer(name, port), hold_at="create")
    release = Release(service="web", version="v1", digest=world.v1)
    try:
        first = asyncio.create_task(held.deployer.deploy(release, incident="r1"))
        assert await asyncio.to_thread(held.holding.wait, 30)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        retry = asyncio.create_task(held.deployer.deploy(release, incident="r1"))
        await asyncio.sleep(1.0)
        assert not retry.done()
        assert held.seen == ["rename", "create"]  # the retry waits for the create still in flight
        held.go_on.set()
        result = await asyncio.wait_for(retry, 60)
        assert held.seen == ["rename", "create", "stop", "start"]
        assert result["containers"][0]["resumed"] is True, result
        world.assert_one_serving_v1(name, port, "r1")
    finally:
        await held.deployer.close()
        world.podman.remove_containers()


async def test_a_revert_whose_lease_ran_out_makes_no_further_engine_call_and_ends_fenced(world: World) -> None:
    """A leader paused past its lease (SIGSTOP, a VM pause) wakes up: its revert's thread may run on
    before the event loop notices and cancels the step. The thread asks the lease's local bound before
    each engine call: it makes none once the bound has passed, and the step ends as fenced (the runner
    steps down; the step stays started for the new leader), instead of swapping under the new leader."""
    name, port = world.start_v2()
    held = Cancellable(world.deployer(name, port), hold_at="create")
    release = Release(service="web", version="v1", digest=world.v1)
    lease = {"holds": True}
    token = fence.holding.set(lambda: lease["holds"])  # as the runner sets it for an incident's task
    try:
        task = asyncio.create_task(held.deployer.deploy(release, incident="f1"))
    finally:
        fence.holding.reset(token)
    try:
        assert await asyncio.to_thread(held.holding.wait, 30)
        lease["holds"] = False  # the pause outlasted the lease; nothing has cancelled the step
        held.go_on.set()
        with pytest.raises(FencedError, match="lease"):
            await asyncio.wait_for(task, 30)
        assert held.seen == ["rename", "create"]
        state = world.state(name)
        assert state[f"{name}__pre_f1"] == (world.v2, "running"), state
        await held.next_owner_finishes(world, name, port, release, "f1")
    finally:
        world.podman.remove_containers()
