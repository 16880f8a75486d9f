"""Code rollback benchmark: rollbackd's `deploy.revert` against the raw sequence a human would type, side by
side, in one run, on the same containers (real Podman serving the Docker API, a private service).

    .venv/bin/python bench/revert/run.py [--rounds 3]

Each round starts a container of the bad image v2 (env, port, label, restart policy, healthcheck, command set
by the operator), then reverts it to the good image v1 while a client polls GET /version every 20 ms:
  ours:  the deploy.revert step (registry lookups, rename, create, stop, start, wait healthy)
  raw:   `docker stop`, `docker rm`, `docker run` with the same flags, wait healthy -- through the same API
         client (the fastest a human's commands can be), and once more with the podman CLI
Unavailability = the longest gap between two successful answers minus the 20 ms interval. It prints both,
the ratio (goal <= 1.10) and the time from step start to healthy. Best and median over the rounds; sides
alternate. Every container and image it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "daemon"), str(ROOT)]

from docker.types import Healthcheck  # noqa: E402

from rollbackd.config import StepConfig  # noqa: E402
from rollbackd.deploy import BaselineOptions  # noqa: E402
from rollbackd.deploy.docker import DockerDeployer  # noqa: E402
from rollbackd.deploy.ledger import Ledger  # noqa: E402
from rollbackd.deploy.steps import Redeploy  # noqa: E402
from rollbackd.metrics import Metrics  # noqa: E402
from rollbackd.plan import ServiceRuntime, StepContext  # noqa: E402
from rollbackd.reasons import IncidentState  # noqa: E402
from rollbackd.records import Incident, Trigger  # noqa: E402
from rollbackd.state.sqlite import SqliteStateStore  # noqa: E402
from tests.support import images  # noqa: E402
from tests.support.podman import PodmanService  # noqa: E402
from tests.support.poller import Poller  # noqa: E402


class Bench:
    def __init__(self, pm: PodmanService, store: SqliteStateStore) -> None:
        self.pm, self.store = pm, store
        self.v1 = images.build_web_image(pm, images.session_tag(pm, "bweb", "v1"), version="v1")
        self.v2 = images.build_web_image(
            pm, images.session_tag(pm, "bweb", "v2"), version="v2", healthy=False, env={"MODEL": "big"}
        )
        self.round = 0

    def flags(self, port: int) -> dict[str, Any]:
        return {
            **images.web_container_kwargs(self.pm, port=port, labels={"op.label": "x"}),
            "environment": {"USER_SET": "1"},
            "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 3},
            "healthcheck": Healthcheck(test=["CMD", "/bin/true"], interval=30_000_000_000),
            "command": ["/bin/sh", "-c", "exec /bin/sh /start.sh"],
        }

    def start_v2(self) -> tuple[str, int]:
        port, name = images.free_port(), self.pm.name("bench")
        images.start_container(self.pm, self.v2, name=name, **self.flags(port))
        images.wait_http(f"http://127.0.0.1:{port}/version")
        return name, port

    async def ours(self) -> tuple[float, float]:
        """v1 ran first with the same flags and was recorded (its container spec captured), as a
        pipeline does; then v2 replaced it by hand. Only the revert is timed."""
        port, name = images.free_port(), self.pm.name("bench")
        images.start_container(self.pm, self.v1, name=name, **self.flags(port))
        images.wait_http(f"http://127.0.0.1:{port}/health")
        self.round += 1
        deployer = DockerDeployer(
            DockerDeployer.Options.model_validate(
                {
                    "type": "docker",
                    "docker_host": self.pm.docker_host,
                    "version_label": "app.version",
                    "health_url": f"http://127.0.0.1:{port}/health",
                    "health_interval": 0.02,
                    "containers": [{"name": name}],
                }
            )
        )
        ledger = Ledger(
            service=f"bench{self.round}",
            store=self.store,
            metrics=Metrics([]),
            prometheus=None,
            baseline=BaselineOptions(),
            green_after=None,
            deployer=deployer,
        )
        green = await ledger.record(
            version="v1",
            image=None,
            digest=self.v1,
            config_digest=None,
            schema_version=None,
            source="pipeline",
            actor="bench",
            reason="bench",
        )
        assert green.spec is not None, "the green container's spec was not captured"
        self.pm.client().api.remove_container(name, force=True)
        images.start_container(self.pm, self.v2, name=name, **self.flags(port))
        images.wait_http(f"http://127.0.0.1:{port}/version")
        await ledger.observe()  # v2 runs and is recorded as observed (live)
        context: dict[str, Any] = {"target": {"version": "v1", "digest": self.v1, "release_id": green.id}}
        incident = Incident(
            id=f"b{self.round}",
            service=ledger.service,
            state=IncidentState.RUNNING,
            trigger=Trigger(kind="manual", reason="bench", requested_by="bench"),
            dry_run=False,
            created_at=time.time(),
            plan=[],
            context=context,
        )

        async def save(key: str, value: Any) -> None:
            context[key] = value

        runtime = ServiceRuntime(
            name=ledger.service,
            config=None,  # type: ignore[arg-type]
            resources={"deployer": deployer, "releases": ledger},
        )
        ctx = StepContext(
            incident=incident,
            runtime=runtime,
            step_name="deploy.revert",
            attempt=1,
            dry_run=False,
            outputs={},
            log=logging.LoggerAdapter(logging.getLogger("bench"), {}),
            save=save,
        )
        step = Redeploy(StepConfig(type="deploy.revert"), Redeploy.Options())
        with Poller(port) as poller:
            started = time.monotonic()
            output = await step.run(ctx)
            to_healthy = time.monotonic() - started
        await deployer.close()
        assert images.wait_http(f"http://127.0.0.1:{port}/version").strip() == b"v1"
        assert output["spec"] == "recorded", output
        return poller.unavailable, to_healthy

    def raw(self, stop_rm_run: Callable[[str, int], None]) -> tuple[float, float]:
        name, port = self.start_v2()
        with Poller(port) as poller:
            started = time.monotonic()
            stop_rm_run(name, port)
            images.wait_http(f"http://127.0.0.1:{port}/health", timeout=30)
            to_healthy = time.monotonic() - started
        assert images.wait_http(f"http://127.0.0.1:{port}/version").strip() == b"v1"
        return poller.unavailable, to_healthy

    def api_sequence(self, name: str, port: int) -> None:
        client = self.pm.client()
        old = client.containers.get(name)
        old.stop(timeout=10)
        old.remove()
        client.containers.create(self.v1, name=name, **self.flags(port)).start()

    def cli_sequence(self, name: str, port: int) -> None:
        self.pm.cli("stop", "-t", "10", name)
        self.pm.cli("rm", name)
        self.pm.cli(
            "run",
            "-d",
            "--name",
            name,
            "-p",
            f"127.0.0.1:{port}:{images.WEB_PORT}",
            "-e",
            "USER_SET=1",
            *[a for k, v in self.pm.labels.items() for a in ("--label", f"{k}={v}")],
            "--label",
            "op.label=x",
            "--restart",
            "on-failure:3",
            "--health-cmd",
            "/bin/true",
            "--health-interval",
            "30s",
            self.v1,
            "/bin/sh",
            "-c",
            "exec /bin/sh /start.sh",
        )


def show(label: str, values: list[float]) -> str:
    return f"{label:<44} best {min(values) * 1000:7.0f} ms   median {statistics.median(values) * 1000:7.0f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, PodmanService() as pm:
        store = SqliteStateStore(SqliteStateStore.Options(path=str(Path(tmp) / "bench.db")))
        await store.open()
        bench = Bench(pm, store)
        results: dict[str, list[tuple[float, float]]] = {"ours": [], "api": [], "cli": []}
        for i in range(args.rounds):
            if i % 2:  # alternate which side goes first
                results["api"].append(await asyncio.to_thread(bench.raw, bench.api_sequence))
                results["ours"].append(await bench.ours())
            else:
                results["ours"].append(await bench.ours())
                results["api"].append(await asyncio.to_thread(bench.raw, bench.api_sequence))
            results["cli"].append(await asyncio.to_thread(bench.raw, bench.cli_sequence))
            pm.remove_containers()
        await store.close()
    ours = [u for u, _ in results["ours"]]
    api = [u for u, _ in results["api"]]
    cli = [u for u, _ in results["cli"]]
    print(f"\ncode rollback v2 -> v1, {args.rounds} rounds, client polling every 20 ms (unavailability window)")
    print(show("rollbackd deploy.revert", ours))
    print(show("raw stop, rm, run (same API client)", api))
    print(show("raw podman stop, rm, run (CLI)", cli))
    print(
        f"ratio rollbackd / raw API   best {min(ours) / min(api):.2f}   median "
        f"{statistics.median(ours) / statistics.median(api):.2f}   (goal <= 1.10)"
    )
    print(
        f"ratio rollbackd / raw CLI   best {min(ours) / min(cli):.2f}   median "
        f"{statistics.median(ours) / statistics.median(cli):.2f}"
    )
    print(show("rollbackd step start -> healthy", [t for _, t in results["ours"]]))
    print(show("raw API stop -> healthy", [t for _, t in results["api"]]))
    print(show("raw CLI stop -> healthy", [t for _, t in results["cli"]]))


if __name__ == "__main__":
    asyncio.run(main())
