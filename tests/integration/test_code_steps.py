"""The code steps in a real daemon (subprocess, SQLite journal) against real Podman: traffic.cut,
deploy.revert and traffic.restore with kill -9 between steps, then `rollbackd rollforward`, the
release registry over the API and the CLI (`release list --markdown`, `traffic set`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import images
from tests.support.daemon import API_TOKEN, REPO, DaemonProcess, write_config
from tests.support.http_stub import JsonHandler, serve
from tests.support.podman import PodmanService
from tests.support.podman import podman as podman

pytestmark = pytest.mark.integration


class Switch(JsonHandler):
    """A load balancer's admin API: GET /weight -> {"weight": n}; PUT /weight {"weight": n}."""

    def do_GET(self) -> None:
        self.send_json(200, {"weight": self.server.weight})

    def do_PUT(self) -> None:
        body = self.read_json()
        self.server.weight = int(body["weight"])
        self.server.sets.append(self.server.weight)
        self.send_json(200, {"weight": self.server.weight})


@pytest.fixture
def switch() -> Iterator[Any]:
    with serve(Switch, weight=50, sets=[]) as server:
        yield server


def wait_step(daemon: DaemonProcess, incident_id: str, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = daemon.api.call("GET", f"/v1/incidents/{incident_id}")[1]
        if any(s["name"] == name and s["state"] == "started" for s in body.get("steps", [])):
            return
        time.sleep(0.05)
    raise AssertionError(f"step {name} never started: {body}")


def gate(tmp_path: Path, name: str) -> dict[str, Any]:
    flag = tmp_path / name
    return {"type": "command", "name": name, "argv": ["/bin/sh", "-c", f"while [ ! -f {flag} ]; do sleep 0.05; done"]}


def cli(daemon: DaemonProcess, *args: str) -> str:
    env = {
        **os.environ,
        "ROLLBACKD_URL": daemon.url,
        "ROLLBACKD_API_TOKEN": API_TOKEN,
        "PYTHONPATH": str(REPO / "daemon"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "rollbackd", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_kill9_between_code_steps_resumes_then_rolls_forward(
    podman: PodmanService, switch: Any, tmp_path: Path
) -> None:
    v1 = images.build_web_image(podman, images.session_tag(podman, "cweb", "v1"), version="v1")
    v2 = images.build_web_image(podman, images.session_tag(podman, "cweb", "v2"), version="v2", healthy=False)
    port = images.free_port()
    name = podman.name("rag")
    kwargs = dict(images.web_container_kwargs(podman, port=port), environment={"USER_SET": "1"})
    images.start_container(podman, v1, name=name, **kwargs)
    images.wait_http(f"http://127.0.0.1:{port}/version")
    switch_url = f"http://127.0.0.1:{switch.server_address[1]}/weight"
    service = {
        "policy": {"confirm": "off"},
        "releases": {"data": "optional"},
        "deploy": {
            "type": "docker",
            "docker_host": podman.docker_host,
            "version_label": "app.version",
            "health_url": f"http://127.0.0.1:{port}/version",
            "health_timeout": "20s",
            "containers": [{"name": name}],
        },
        "traffic": {"type": "http", "get_url": switch_url, "set_url": switch_url},
        "plan": [
            {"type": "traffic.cut"},
            gate(tmp_path, "gate1"),
            {"type": "deploy.revert"},
            gate(tmp_path, "gate2"),
            {"type": "traffic.restore"},
        ],
    }
    daemon = DaemonProcess(write_config(tmp_path, services={"web": service}))
    try:
        daemon.start()
        api = daemon.api
        # the running v1 was noticed and recorded as an observed release; the on-call marks it green
        listed = api.call("GET", "/v1/releases")[1]
        assert [(r["version"], r["source"], r["status"]) for r in listed["releases"]] == [
            ("v1", "observed", "deployed")
        ]
        assert "release v1 is green" in cli(daemon, "release", "mark-green", "v1", "--reason", "ran all day")
        # the pipeline deploys v2 (same flags) and records it by tag: the deployer resolves the digest
        podman.client().containers.get(name).remove(force=True)
        images.start_container(podman, v2, name=name, **kwargs)
        tag = "localhost/" + images.session_tag(podman, "cweb", "v2")
        out = cli(daemon, "release", "record", "v2", "--image", tag, "--schema-version", "1", "--source", "pipeline")
        assert f"release v2 recorded (digest {v2}, deployed)" in out, out
        assert api.call("POST", "/v1/releases", {"version": "v3", "image": "localhost/nope:v3"})[0] == 400

        status, inc = api.call("POST", "/v1/trigger", {"reason": "v2 answers badly"})
        assert status == 202, inc
        assert inc["target"]["version"] == "v1" and inc["target"]["code_only"] is True, inc["target"]
        incident_id = inc["id"]

        wait_step(daemon, incident_id, "gate1")
        assert switch.weight == 0 and switch.sets == [0]
        daemon.kill9()  # between traffic.cut and deploy.revert
        (tmp_path / "gate1").touch()
        daemon.start()
        wait_step(daemon, incident_id, "gate2")
        assert images.wait_http(f"http://127.0.0.1:{port}/version").strip() == b"v1"
        recreated = podman.client().api.inspect_container(name)["Id"]
        daemon.kill9()  # between deploy.revert and traffic.restore
        (tmp_path / "gate2").touch()
        daemon.start()
        final = api.wait_incident(incident_id, ("resolved", "failed"))
        assert final["state"] == "resolved", final
        steps = {s["name"]: s for s in final["steps"]}
        assert steps["traffic.cut"]["output"]["weight_before"] == 50 and steps["traffic.cut"]["attempts"] == 1
        assert steps["deploy.revert"]["attempts"] == 1
        assert podman.client().api.inspect_container(name)["Id"] == recreated  # never redeployed twice
        assert switch.weight == 50 and switch.sets == [0, 50]  # the weight found, not the 0 it set
        assert "USER_SET=1" in podman.client().api.inspect_container(name)["Config"]["Env"]
        matrix = api.call("GET", "/v1/releases")[1]
        assert [(r["version"], r["status"]) for r in matrix["releases"]][:2] == [
            ("v2", "rolled_back"),
            ("v1", "deployed"),
        ]
        table = cli(daemon, "release", "list", "--markdown")
        print("\n" + table)
        assert "| v1 | deployed | yes (tester: ran all day)" in table and "| v2 | rolled_back | no |" in table
        assert "(null" not in table

        # roll forward: v2 runs again from the kept container
        out = cli(daemon, "rollforward", incident_id, "--reason", "the data team wants v2 back")
        forward_id = out.split()[1]
        forward = api.wait_incident(forward_id, ("resolved", "failed"))
        assert forward["state"] == "resolved", forward
        assert [s["type"] for s in forward["steps"]] == ["traffic.cut", "deploy.roll_forward", "traffic.restore"]
        assert images.wait_http(f"http://127.0.0.1:{port}/version").strip() == b"v2"
        assert podman.client().api.inspect_container(name)["Image"] == v2
        versions = [(r["version"], r["status"]) for r in api.call("GET", "/v1/releases")[1]["releases"]]
        assert versions[:2] == [("v2", "deployed"), ("v1", "superseded")]

        assert "weight 50 -> 30" in cli(daemon, "traffic", "set", "30", "--reason", "canary")
        assert switch.weight == 30
        status_body = api.call("GET", "/v1/status")[1]["services"]["web"]
        assert status_body["traffic"]["switch"] == "http" and status_body["deploy"] == "docker"
    finally:
        daemon.stop()
