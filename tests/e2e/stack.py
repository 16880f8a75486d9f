"""The whole 3 AM world on one machine, started and torn down by the end-to-end tests and by
`scripts/demo`: the reference RAG service as a Podman container (v1 good, v2 bad), its Postgres
database and Qdrant collection (test server) with a corpus, Prometheus with the shipped rules,
Alertmanager with config/alertmanager.example.yml, `rollbackd serve`, a Slack recorder and a traffic
switch stub.

Time compression (CI): the shipped rules are transformed by tests/support/rules_transform.compress,
which divides every `for:`, range window and offset by FACTOR (60: `for: 3m` -> 3s, `[5m]` -> [5s]);
Alertmanager's group_wait/group_interval become 1s. FACTOR=1 runs the shipped rules unchanged
(`make e2e-real` / `ROLLBACKD_E2E_FACTOR=1`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.traffic_stub import TrafficStub
from tests.support import corpus, images
from tests.support.alertmanager import example_config
from tests.support.daemon import REPO, WEBHOOK_TOKEN, DaemonProcess, free_port
from tests.support.pg import drop_database_sync, fresh_database_sync
from tests.support.podman import PodmanService
from tests.support.prometheus import AlertmanagerServer, PrometheusServer, ScrapeTarget
from tests.support.qdrant import QdrantTestServer
from tests.support.rules_transform import compress
from tests.support.slack_recorder import SlackRecorder

FACTOR = int(os.environ.get("ROLLBACKD_E2E_FACTOR", "60"))
RULE_FILES = [REPO / "rules" / "rag.rules.yml", REPO / "rules" / "rollbackd.rules.yml"]


class Stack:
    def __init__(self, workdir: Path, podman: PodmanService, *, factor: int = FACTOR) -> None:
        self.dir = workdir
        self.podman = podman
        self.factor = factor
        self.exit = contextlib.ExitStack()
        self.rag_port = free_port()
        self.container_name = podman.name("rag")
        self.dsn = ""
        self.daemon_url = ""
        self.daemon: DaemonProcess | None = None
        self.extra_targets: list[ScrapeTarget] = []  # e.g. a rollout's canary (tests/e2e/test_rollout.py)

    # ---- bring-up, in dependency order -------------------------------------------------------------
    def start(self, rollbackd_config: Any) -> Stack:
        self.dir.mkdir(parents=True, exist_ok=True)
        # the stack's containers (the service, its canary, the ones a revert kept) go with the stack: left
        # running until the session ends, every later test would share the cores with them
        self.exit.callback(self.podman.remove_containers, predicate=self._mine)
        self.dsn = fresh_database_sync("e2e")
        self.exit.callback(drop_database_sync, self.dsn)
        asyncio.run(corpus.create_corpus(self.dsn))
        self.qdrant = self.exit.enter_context(QdrantTestServer(self.dir / "qdrant"))
        asyncio.run(corpus.load_points(self.qdrant.url, "docs__v1", dsn=self.dsn, alias="docs"))
        self.image_v1 = images.build_rag_image(self.podman, images.session_tag(self.podman, "rag", "v1"), version="v1")
        self.image_v2 = images.build_rag_image(
            self.podman, images.session_tag(self.podman, "rag", "v2"), version="v2", env={"RAG_MODE": "bad"}
        )
        self.run_release(self.image_v1)
        self.traffic = self.exit.enter_context(TrafficStub())
        self.slack = self.exit.enter_context(SlackRecorder())
        # rollbackd's listen address is fixed in its config first: Alertmanager and Prometheus need it,
        # and rollbackd needs Prometheus's URL.
        config = rollbackd_config(self)
        self.daemon_url = f"http://{config['listen']}"
        self.alertmanager = self.exit.enter_context(AlertmanagerServer(self._alertmanager_config()))
        self.prometheus = self.exit.enter_context(
            PrometheusServer(
                targets=[
                    ScrapeTarget("rag", f"127.0.0.1:{self.rag_port}", labels={"service": "rag"}),
                    ScrapeTarget("rollbackd", config["listen"]),
                    *self.extra_targets,
                ],
                rule_files=self._rules(),
                alertmanager_url=self.alertmanager.url,
                workdir=self.dir / "prometheus",
            )
        )
        config["prometheus"] = {"url": self.prometheus.url, "timeout": "3s"}
        env = {
            "DOCKER_HOST": self.podman.docker_host,
            "CONTAINERS_CONF": str(self.podman.conf_path),
            "SLACK_BOT_TOKEN": self.slack.token,
        }
        self.daemon = DaemonProcess(self._write_rollbackd_config(config), env=env)
        self.daemon.start()
        self.exit.callback(self.daemon.stop)
        return self

    def _mine(self, summary: dict[str, Any]) -> bool:
        names = [n.lstrip("/") for n in summary.get("Names") or []]
        return any(n == self.container_name or n.startswith(self.container_name + "__") for n in names)

    def stop(self) -> None:
        self.exit.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the RAG service ---------------------------------------------------------------------------
    def run_release(self, image_id: str, env: dict[str, str] | None = None) -> Any:
        """Replace the service container with one of `image_id`, as a deploy pipeline would."""
        client = self.podman.client()
        with contextlib.suppress(Exception):
            old = client.containers.get(self.container_name)
            old.stop(timeout=5)
            old.remove()
        kwargs = images.rag_container_kwargs(
            self.podman,
            port=self.rag_port,
            pg_dsn=self.dsn,
            qdrant_url=self.qdrant.url,
            collection="docs",
            self_traffic_rps=20,
            # an answer takes 40 ms, as a (fast) LLM's would: with a P95 of a few milliseconds, the 3x
            # latency regression rule fired on the machine's own load (a clean rollout rolled back)
            env={"RAG_PROVIDER_LATENCY": "0.04", **(env or {})},
        )
        container = images.start_container(self.podman, image_id, name=self.container_name, **kwargs)
        images.wait_http(f"{self.rag_url}/healthz", timeout=30)
        return container

    @property
    def rag_url(self) -> str:
        return f"http://127.0.0.1:{self.rag_port}"

    def rag_version(self) -> str:
        with urllib.request.urlopen(f"{self.rag_url}/version", timeout=5) as resp:
            version: str = json.loads(resp.read())["version"]
            return version

    def fault(self, **fault: Any) -> None:
        req = urllib.request.Request(
            f"{self.rag_url}/admin/fault",
            data=json.dumps(fault).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=5).close()

    def running_image(self) -> str:
        image: str = self.podman.client().containers.get(self.container_name).image.id
        return image

    # ---- Prometheus and Alertmanager ---------------------------------------------------------------
    def _rules(self) -> list[Path]:
        out = []
        for path in RULE_FILES:
            target = self.dir / path.name
            text = path.read_text()
            target.write_text(compress(text, self.factor) if self.factor > 1 else text)
            out.append(target)
        return out

    def _alertmanager_config(self) -> str:
        token_file = self.dir / "webhook-token"
        token_file.write_text(WEBHOOK_TOKEN + "\n")
        return example_config(self.daemon_url, token_file, fast=self.factor > 1)

    def _write_rollbackd_config(self, config: dict[str, Any]) -> Path:
        path = self.dir / "rollbackd.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def wait_alert(self, alertname: str, state: str = "firing", timeout: float = 120) -> None:
        expr = f'ALERTS{{alertname="{alertname}",alertstate="{state}",service="rag"}}'
        self.prometheus.wait_for(expr, timeout=timeout)


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
