"""A hand-made bad deploy, then the first alert (in-process daemon, real Podman, Slack recorder): the live
container nobody recorded is detected at decision time and recorded, so the alert is acted on; the
incident says what changed from it to the green release in `show`, in the Slack root message and in
`rollbackd release diff`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from rollbackd.cli import render
from rollbackd.cli.main import main
from rollbackd.deploy.ledger import OBSERVE_CACHE_S
from tests.support import images
from tests.support.daemon import API_TOKEN, Api, running_daemon, write_config
from tests.support.podman import PodmanService
from tests.support.podman import podman as podman
from tests.support.slack_recorder import SlackRecorder

pytestmark = pytest.mark.integration


def service(podman: PodmanService, name: str, port: int) -> dict[str, Any]:
    return {
        "policy": {"confirm": "off"},
        "releases": {"data": "optional"},
        "plan": [{"type": "command", "argv": ["/bin/true"]}],
        "deploy": {
            "type": "docker",
            "docker_host": podman.docker_host,
            "version_label": "app.version",
            "containers": [{"name": name, "health_url": f"http://127.0.0.1:{port}/health"}],
        },
    }


async def test_first_alert_after_a_hand_made_deploy_is_acted_on_and_says_what_changed(
    tmp_path: Path,
    podman: PodmanService,
    slack_recorder: SlackRecorder,
    firing_payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack_recorder.token)
    v1 = images.build_web_image(podman, images.session_tag(podman, "wweb", "v1"), version="v1")
    v2 = images.build_web_image(podman, images.session_tag(podman, "wweb", "v2"), version="v2")
    name, port = podman.name("wweb"), images.free_port()
    notify = {
        "type": "slack",
        "bot_token": "${SLACK_BOT_TOKEN}",
        "channel": "C0",
        "base_url": slack_recorder.base_url,
        "max_retries": 1,
        "timeout": 2,
    }
    cfg = write_config(tmp_path, services={"rag": service(podman, name, port)}, notify=notify)
    kwargs = images.web_container_kwargs(podman, port=port)
    try:
        async with running_daemon(cfg) as d:
            api = Api(d.url)

            async def call(*args: Any) -> Any:
                return await asyncio.to_thread(api.call, *args)

            await asyncio.to_thread(
                images.start_container, podman, v1, name=name, environment={"WORKERS": "2"}, **kwargs
            )
            await asyncio.to_thread(images.wait_http, f"http://127.0.0.1:{port}/health")
            assert (await call("POST", "/v1/releases", {"version": "v1", "digest": v1}))[0] == 201
            assert (await call("POST", "/v1/releases/v1/green", {"reason": "ran a week"}))[0] == 200
            # by hand, unrecorded: the bad v2 with a feature flag and a memory limit
            podman.client().api.remove_container(name, force=True)
            await asyncio.to_thread(
                images.start_container,
                podman,
                v2,
                name=name,
                mem_limit="256m",
                environment={"WORKERS": "2", "FEATURE_X": "on", "DB_PASSWORD": "hunter2"},
                **kwargs,
            )
            await asyncio.sleep(OBSERVE_CACHE_S)  # the decision-time inspect may be cached that long
            status, body = await asyncio.to_thread(api.webhook, firing_payload)
            assert status == 202
            decision = body["decisions"][0]
            assert decision["action"] == "rollback", decision
            listed = (await call("GET", "/v1/releases"))[1]
            assert [(r["version"], r["source"]) for r in listed["releases"]] == [("v2", "observed"), ("v1", "pipeline")]
            (incident,) = await d.core.store.list_incidents("rag", 5)
            await d.core.runner.wait(incident.id)
            await d.core.notify.drain()
            shown = render.incident((await call("GET", f"/v1/incidents/{incident.id}"))[1])
            code = await asyncio.to_thread(
                main, ["release", "diff", "v2", "v1", "--url", d.url, "--token", API_TOKEN, "--service", "rag"]
            )
            diff = capsys.readouterr().out
    finally:
        podman.remove_containers()
    print("\n" + shown + "\n" + diff)
    for text in (shown, diff):
        assert "release: v2 -> v1" in text and "env FEATURE_X removed (was 'on')" in text, text
        assert "env DB_PASSWORD removed (was ***)" in text and "hunter2" not in text
        assert "Memory: 268435456 -> (default)" in text
        assert "WORKERS" not in text
    assert "what changed:" in shown and code == 0
    (root,) = slack_recorder.roots()
    posted = str(root.body)
    assert "What changed" in posted and "FEATURE_X" in posted and "hunter2" not in posted
