"""A release is a container spec: the revert recreates the green container exactly (real Podman).

The green v1 runs with many operator flags and is recorded (its spec captured); the operator then deploys
the bad v2 by hand with different flags (v2's image has USER 1000, WORKERS=4, tier=gold, VOLUME /v2data;
its run adds FEATURE_X, --memory, a label, another healthcheck and drops the pids limit and stop timeout).
The revert must bring back v1's spec property by property, and nothing of v2's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rollbackd.capabilities import Capabilities
from rollbackd.config import StepConfig
from rollbackd.deploy import BaselineOptions
from rollbackd.deploy.docker import NO_SPEC, DockerDeployer
from rollbackd.deploy.engine import LIBPOD
from rollbackd.deploy.ledger import Ledger
from rollbackd.deploy.spec import read_sysctls
from rollbackd.deploy.steps import Redeploy
from rollbackd.errors import PayloadError
from rollbackd.metrics import Metrics
from rollbackd.plan import ServiceRuntime, StepContext
from rollbackd.reasons import IncidentState
from rollbackd.records import Incident, Release, Trigger
from rollbackd.state.sqlite import SqliteStateStore
from tests.support import images
from tests.support.podman import PodmanService
from tests.support.podman import podman as podman

pytestmark = pytest.mark.integration
SYSCTL = "net.ipv4.ip_unprivileged_port_start"


@dataclass
class Images:
    v1: str
    v2: str
    network: str
    bind: Path


@pytest.fixture(scope="module")
def imgs(podman: PodmanService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    v1 = images.build_web_image(
        podman, images.session_tag(podman, "sweb", "v1"), version="v1", env={"WORKERS": "1"}, labels={"tier": "bronze"}
    )
    v2 = images.build_web_image(
        podman,
        images.session_tag(podman, "sweb", "v2"),
        version="v2",
        env={"WORKERS": "4"},
        labels={"tier": "gold"},
        user="1000",
        volumes=["/v2data"],
    )
    net = podman.client().networks.create(podman.name("snet"), labels=podman.labels)
    bind = tmp_path_factory.mktemp("bind")
    (bind / "f").write_text("x")
    try:
        yield Images(v1, v2, net.name, bind)
    finally:
        podman.remove_containers()
        net.remove()


def labels(podman: PodmanService) -> list[str]:
    return [a for k, v in podman.labels.items() for a in ("--label", f"{k}={v}")]


def green_flags(pm: PodmanService, im: Images, port: int, volume: str) -> list[str]:
    return [
        *labels(pm),
        "-p",
        f"127.0.0.1:{port}:8080",
        "--user",
        "1000",
        "-e",
        "WORKERS=4",
        "-e",
        "OP=1",
        "--label",
        "tier=gold",
        "--label",
        "op.label=kept",
        "--network",
        im.network,
        "--network-alias",
        "web-a",
        "--hostname",
        "webhost",
        "--restart",
        "on-failure:3",
        "-v",
        f"{im.bind}:/data:ro",
        "-v",
        f"{volume}:/named",
        "--read-only",
        "--tmpfs",
        "/scratch",
        "--ulimit",
        "nofile=1024:2048",
        "--ulimit",
        "nproc=1024:2048",
        "--cap-drop",
        "NET_RAW",
        "--security-opt",
        "no-new-privileges",
        "--pids-limit",
        "200",
        "--memory-reservation",
        "64m",
        "--oom-score-adj",
        "300",
        "--group-add",
        "123",
        "--sysctl",
        f"{SYSCTL}=0",
        "--log-opt",
        "max-size=5m",
        "--stop-timeout",
        "7",
        "--health-cmd",
        "/bin/true",
        "--health-interval",
        "30s",
    ]


def bad_flags(pm: PodmanService, im: Images, port: int) -> list[str]:
    return [
        *labels(pm),
        "-p",
        f"127.0.0.1:{port}:8080",
        "--user",
        "1000",
        "-e",
        "WORKERS=4",
        "-e",
        "FEATURE_X=on",
        "--label",
        "tier=gold",
        "--label",
        "bad.only=1",
        "--network",
        im.network,
        "--memory",
        "256m",
        "--health-cmd",
        "/bin/false",
        "--health-interval",
        "10s",
    ]


def inspect(pm: PodmanService, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    api = pm.client().api
    compat: dict[str, Any] = api.inspect_container(name)
    libpod: dict[str, Any] = api.get(api.base_url + LIBPOD.format(compat["Id"])).json()
    return compat, libpod


@pytest.fixture
async def ledger(podman: PodmanService, tmp_path: Path) -> AsyncIterator[tuple[Ledger, str, int]]:
    name, port = podman.name("sweb"), images.free_port()
    deployer = DockerDeployer(
        DockerDeployer.Options.model_validate(
            {
                "type": "docker",
                "docker_host": podman.docker_host,
                "health_timeout": 20,
                "version_label": "app.version",
                "containers": [{"name": name, "health_url": f"http://127.0.0.1:{port}/health"}],
            }
        )
    )
    store = SqliteStateStore(SqliteStateStore.Options(path=str(tmp_path / "s.db")))
    await store.open()
    yield (
        Ledger(
            service="web",
            store=store,
            metrics=Metrics(["web"]),
            prometheus=None,
            baseline=BaselineOptions(),
            green_after=None,
            deployer=deployer,
        ),
        name,
        port,
    )
    await deployer.close()
    await store.close()


async def test_revert_recreates_the_green_spec_property_by_property(
    podman: PodmanService, imgs: Images, ledger: tuple[Ledger, str, int]
) -> None:
    led, name, port = ledger
    volume = podman.name("vol")
    podman.cli("run", "-d", "--name", name, *green_flags(podman, imgs, port, volume), imgs.v1)
    try:
        await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/health")
        green = await led.record(
            version="v1",
            image=None,
            digest=imgs.v1,
            config_digest=None,
            schema_version=None,
            source="pipeline",
            actor="t",
            reason="t",
        )
        await led.mark_green("v1", actor="t", reason="t")
        assert green.spec is not None and await led.spec_of(green) == green.spec
        recorded = green.spec[name]
        before_compat, before_libpod = inspect(podman, name)
        # the operator deploys the bad v2 by hand
        podman.cli("rm", "-f", "-t", "2", name)
        podman.cli("run", "-d", "--name", name, *bad_flags(podman, imgs, port), imgs.v2)
        await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/version")
        await led.observe()
        assert (await led.live()).version == "v2"  # type: ignore[union-attr]

        result = await led.deployer.deploy(
            await led.with_spec(await led.find("v1")),  # type: ignore[union-attr]
            incident="s1",
        )
        assert result["spec"] == "recorded", result
        assert (await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/version")).strip() == b"v1"
        compat, libpod = inspect(podman, name)
        cfg, host = compat["Config"], compat["HostConfig"]
        # whole state: the reverted container's spec is the recorded one
        now = (await led.deployer.capture())[name]  # type: ignore[union-attr]
        assert now == recorded
        assert compat["Image"] == imgs.v1
        assert cfg["User"] == "1000"  # the root-user trap: equal to the bad image's USER, still the operator's
        env = dict(e.split("=", 1) for e in cfg["Env"])
        assert env["WORKERS"] == "4" and env["OP"] == "1" and env["APP_VERSION"] == "v1"  # equal-value env kept
        assert "FEATURE_X" not in env  # a bad-deploy-only flag
        assert cfg["Labels"]["tier"] == "gold" and cfg["Labels"]["op.label"] == "kept"
        assert "bad.only" not in cfg["Labels"]
        assert cfg["Healthcheck"] == before_compat["Config"]["Healthcheck"]  # v1's check, not v2's /bin/false
        assert cfg["StopTimeout"] == 7 and libpod["Config"]["StopTimeout"] == 7
        assert cfg["Hostname"] == "webhost"
        assert not any(m["Destination"] == "/v2data" for m in compat["Mounts"])  # v2's anonymous VOLUME
        assert any(m["Destination"] == "/named" and m["Name"] == volume for m in compat["Mounts"])
        assert any(m["Destination"] == "/data" and not m["RW"] for m in compat["Mounts"])
        assert host["Memory"] == 0  # v2's --memory 256m not carried over
        for key in (
            "PidsLimit",
            "MemoryReservation",
            "OomScoreAdj",
            "GroupAdd",
            "ReadonlyRootfs",
            "CapDrop",
            "SecurityOpt",
            "RestartPolicy",
            "PortBindings",
            "Ulimits",
            "Tmpfs",
        ):
            assert host[key] == before_compat["HostConfig"][key], key
        assert host["PidsLimit"] == 200 and host["OomScoreAdj"] == 300 and host["GroupAdd"] == ["123"]
        assert libpod["HostConfig"]["LogConfig"]["Size"] == before_libpod["HostConfig"]["LogConfig"]["Size"] == "5MB"
        assert recorded["host_config"]["Sysctls"] == {SYSCTL: "0"} and not recorded["gaps"]
        assert read_sysctls(libpod) == {SYSCTL: "0"}
        assert "web-a" in compat["NetworkSettings"]["Networks"][imgs.network]["Aliases"]
        print("\nrecorded spec:", json.dumps(recorded, sort_keys=True)[:600])
    finally:
        podman.remove_containers()
        podman.cli("volume", "rm", "-f", volume, check=False)


async def test_a_release_without_spec_falls_back_and_says_so(
    podman: PodmanService, imgs: Images, ledger: tuple[Ledger, str, int]
) -> None:
    led, name, port = ledger
    podman.cli("run", "-d", "--name", name, *bad_flags(podman, imgs, port), imgs.v2)
    deployer = led.deployer
    assert isinstance(deployer, DockerDeployer)
    try:
        await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/version")
        started = time.monotonic()
        result = await deployer.deploy(Release(service="web", version="v1", digest=imgs.v1), incident="s2")
        assert result["spec"] == NO_SPEC and result["containers"][0]["spec"] == NO_SPEC
        assert time.monotonic() - started < 30
        assert (await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/version")).strip() == b"v1"
    finally:
        podman.remove_containers()


async def test_record_refuses_what_the_docker_host_cannot_resolve(
    podman: PodmanService, imgs: Images, ledger: tuple[Ledger, str, int]
) -> None:
    led, _, _ = ledger
    manifest = "sha256:" + "ab" * 32  # a registry manifest digest: never an image id on this host
    for kwargs in (
        {"image": None, "digest": manifest},
        {"image": "localhost/no-such:v9", "digest": None},
        {"image": "localhost/rag@" + manifest, "digest": None},
    ):
        with pytest.raises(PayloadError) as info:
            await led.record(
                version="v9",
                config_digest=None,
                schema_version=None,
                source="pipeline",
                actor="t",
                reason="t",
                **kwargs,
            )  # type: ignore[arg-type]
        assert "does not resolve on the Docker host" in str(info.value)
    assert await led.history() == []
    tag = images.session_tag(podman, "sweb", "v1")
    release = await led.record(
        version="v1",
        image=f"localhost/{tag}",
        digest=None,
        config_digest=None,
        schema_version=None,
        source="pipeline",
        actor="t",
        reason="t",
    )
    assert release.digest == imgs.v1


def step_context(led: Ledger, target: Release, incident: str) -> tuple[StepContext, dict[str, Any]]:
    context: dict[str, Any] = {
        "target": {"version": target.version, "digest": target.digest, "release_id": target.id, "why": "the last green"}
    }

    async def save(key: str, value: Any) -> None:
        context[key] = value

    inc = Incident(
        id=incident,
        service=led.service,
        state=IncidentState.RUNNING,
        dry_run=False,
        trigger=Trigger(kind="manual", reason="t", requested_by="t"),
        created_at=time.time(),
        plan=[],
        context=context,
    )
    runtime = ServiceRuntime(
        name=led.service,
        config=None,  # type: ignore[arg-type]
        caps=Capabilities(deployer=led.deployer, releases=led),
    )
    return StepContext(
        incident=inc,
        runtime=runtime,
        step_name="deploy.revert",
        attempt=1,
        dry_run=False,
        outputs={},
        log=logging.LoggerAdapter(logging.getLogger("t"), {}),
        save=save,
    ), context


@pytest.mark.parametrize("with_spec", [True, False], ids=["spec", "no_spec"])
async def test_the_revert_step_uses_the_recorded_spec_or_says_it_had_none(
    podman: PodmanService, imgs: Images, ledger: tuple[Ledger, str, int], with_spec: bool
) -> None:
    led, name, port = ledger
    flags = [*labels(podman), "-p", f"127.0.0.1:{port}:8080", "--user", "1000"]
    try:
        if with_spec:
            podman.cli("run", "-d", "--name", name, *flags, imgs.v1)
            await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/health")
        green = await led.record(
            version="v1",
            image=None,
            digest=imgs.v1,
            config_digest=None,
            schema_version=None,
            source="pipeline",
            actor="t",
            reason="t",
        )
        await led.mark_green("v1", actor="t", reason="t")
        assert (green.spec is not None) is with_spec
        podman.cli("rm", "-f", "-t", "1", name, check=False)
        podman.cli("run", "-d", "--name", name, *flags, imgs.v2)  # v2's USER is 1000 too: the root trap
        await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/version")
        ctx, _ = step_context(led, green, "st1")
        output = await Redeploy(StepConfig(type="deploy.revert"), Redeploy.Options()).run(ctx)
        print("\n" + output["summary"])
        assert (NO_SPEC in output["summary"]) is not with_spec and output["spec"] == (
            "recorded" if with_spec else NO_SPEC
        )
        user = podman.client().api.inspect_container(name)["Config"]["User"]
        assert user == "1000" if with_spec else user in ("", "0", "root")  # the old inference loses it
        assert (await led.live()).version == "v1"  # type: ignore[union-attr]
    finally:
        podman.remove_containers()
