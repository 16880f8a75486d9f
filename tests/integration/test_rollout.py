"""A progressive rollout against real Prometheus (gates read from a scraped exporter), command
backends for the canary, the live deployment and the traffic switch: a clean release reaches 100 %
and is marked green; errors at 10 % roll it back (weight 0, then the service's rollback plan); a soft
gate holds and then clears; a human's hold and promote are journaled with who; abort is weight 0."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_fixture, relabel
from tests.support import rollout as ro
from tests.support.daemon import API_TOKEN, Api, running_daemon, write_config
from tests.support.prometheus import MetricsExporter, PrometheusServer, ScrapeTarget
from tests.support.slack_recorder import SlackRecorder

DIGEST1 = "sha256:" + "1" * 64
DIGEST2 = "sha256:" + "2" * 64


@pytest.fixture
def exporter() -> Any:
    with MetricsExporter() as exp:
        yield exp


@pytest.fixture
def prom(exporter: MetricsExporter) -> Any:
    with PrometheusServer(targets=[ScrapeTarget("rag", exporter.address, labels={"service": "rag"})]) as server:
        yield server


async def call(api: Api, *args: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(api.call, *args)


async def green_v1(api: Api, baseline: float | None = 0.5) -> None:
    status, body = await call(api, "POST", "/v1/releases", {"version": "v1", "digest": DIGEST1})
    assert status == 201, body
    status, body = await call(api, "POST", "/v1/releases/v1/green", {"reason": "it ran a week"})
    assert status == 200 and body["baseline_p95_s"] == baseline, body


async def start(api: Api) -> dict[str, Any]:
    status, body = await call(api, "POST", "/v1/rollouts", {"version": "v2", "digest": DIGEST2})
    assert status == 202, body
    return dict(body)


async def wait_end(api: Api, rollout_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = await call(api, "GET", f"/v1/incidents/{rollout_id}")
        if status == 200 and body["state"] not in ("pending", "running"):
            return dict(body)
        await asyncio.sleep(0.2)
    raise AssertionError(f"rollout {rollout_id} did not end: {body}")


async def wait_phase(api: Api, rollout_id: str, phase: int, decision: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await call(api, "GET", f"/v1/rollouts/current?id={rollout_id}"))[1]
        last = ((body.get("rollout") or {}).get("phases") or {}).get(str(phase), {}).get("last") or {}
        if last.get("decision") == decision:
            return dict(body)
        await asyncio.sleep(0.1)
    raise AssertionError(f"phase {phase} never decided {decision}: {body}")


def config(tmp_path: Path, w: ro.World, prom: PrometheusServer, slack_recorder: SlackRecorder) -> Path:
    return write_config(
        tmp_path,
        services={"rag": ro.service(w)},
        prometheus={"url": prom.url},
        notify={
            "type": "slack",
            "bot_token": "${SLACK_BOT_TOKEN}",
            "channel": "C0DEPLOY",
            "base_url": slack_recorder.base_url,
            "max_retries": 1,
            "timeout": 2,
        },
    )


@pytest.fixture
async def daemon(
    tmp_path: Path, prom: PrometheusServer, exporter: MetricsExporter, slack_recorder: SlackRecorder, monkeypatch: Any
) -> AsyncIterator[Any]:
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack_recorder.token)
    w = ro.world(tmp_path / "world")
    async with running_daemon(config(tmp_path, w, prom, slack_recorder)) as d:
        d.world = w
        d.api = Api(d.url)
        ro.feed(exporter, w, errors=lambda w: 0.0, p95=lambda w: 0.5)
        prom.wait_for('rag_live_p95{service="rag"}')
        await green_v1(d.api)
        yield d


async def test_a_clean_release_reaches_100_and_is_marked_green(
    daemon: Any, exporter: MetricsExporter, prom: PrometheusServer, capsys: Any
) -> None:
    w, api = daemon.world, daemon.api
    ro.feed(exporter, w, errors=lambda w: 0.0, p95=lambda w: 0.5, live_p95=0.45)
    prom.wait_for('rag_canary_errors{service="rag"}')
    rollout = await start(api)
    weights_seen: set[int] = set()
    deadline = time.monotonic() + 90
    # pending until the runner takes it (a moment after the 202): both mean "not ended yet"
    while (state := (await call(api, "GET", f"/v1/incidents/{rollout['id']}"))[1]["state"]) in ("pending", "running"):
        assert time.monotonic() < deadline, state
        weights_seen.add(w.weight())
        await asyncio.sleep(0.1)
    body = (await call(api, "GET", f"/v1/rollouts/current?id={rollout['id']}"))[1]
    assert state == "resolved" and body["rollout"]["outcome"] == "promoted", body
    assert {1, 10, 50, 100} <= weights_seen
    decisions = [body["rollout"]["phases"][str(i)]["last"]["decision"] for i in range(4)]
    assert decisions == ["promote"] * 4
    releases = (await call(api, "GET", "/v1/releases"))[1]
    v2 = next(r for r in releases["releases"] if r["version"] == "v2")
    assert v2["green_at"] and v2["baseline_p95_s"] == 0.45 and v2["status"] == "deployed"
    assert w.live() == "v2" and w.weight() == 0 and w.canary() is None  # live runs v2; the canary is gone
    assert not w.rollback_log.exists()
    guarded = [s for s in body["steps"] if s["type"] == "rollout.rollback"]
    assert guarded and all(s["output"].get("skipped") for s in guarded)
    flags = ["--url", daemon.url, "--token", API_TOKEN]
    status_text = await cli(capsys, "rollout", "status", "--id", rollout["id"], *flags)
    show_text = await cli(capsys, "show", rollout["id"], *flags)
    for phase in ("phase 1 (1 %): PROMOTE", "phase 4 (100 %): PROMOTE", "rollout of v2 (green: v1) - promoted"):
        assert phase in status_text and phase in show_text, status_text
    assert "hard error_rate" in status_text and "soft latency_p95" in status_text


async def cli(capsys: Any, *argv: str) -> str:
    from rollbackd.cli.main import main

    capsys.readouterr()
    assert await asyncio.to_thread(main, list(argv)) == 0
    return str(capsys.readouterr().out)


async def test_errors_at_10_percent_roll_back_through_the_plan(
    daemon: Any, exporter: MetricsExporter, prom: PrometheusServer
) -> None:
    w, api = daemon.world, daemon.api
    ro.feed(exporter, w, errors=lambda w: 0.3 if w.weight() >= 10 else 0.0, p95=lambda w: 0.5)
    prom.wait_for('rag_canary_errors{service="rag"}')
    rollout = await start(api)
    ended = await wait_end(api, rollout["id"])
    body = (await call(api, "GET", f"/v1/rollouts/current?id={rollout['id']}"))[1]
    assert ended["state"] == "resolved" and body["rollout"]["outcome"] == "rolled_back", body
    assert body["rollout"]["rolled_back"]["phase"] == 1  # the 10 % phase
    last = body["rollout"]["phases"]["1"]["last"]
    assert last["decision"] == "rollback"
    assert [(r["gate"], r["passed"]) for r in last["readings"] if r["kind"] == "hard"] == [("error_rate", False)]
    assert "2" not in body["rollout"]["phases"]  # never reached 50 %
    assert w.weight() == 0 and w.live() == "v1" and w.canary() is None  # users on green
    assert w.rollback_log.read_text() == "rolled back\n"  # the service's rollback plan ran
    releases = (await call(api, "GET", "/v1/releases"))[1]["releases"]
    assert [r["version"] for r in releases] == ["v1"]  # v2 was never recorded live


async def test_a_soft_gate_holds_then_clears(
    daemon: Any, exporter: MetricsExporter, prom: PrometheusServer, slack_recorder: SlackRecorder
) -> None:
    w, api = daemon.world, daemon.api
    slow = {"on": True}
    ro.feed(exporter, w, errors=lambda w: 0.0, p95=lambda w: 0.9 if slow["on"] and w.weight() >= 10 else 0.5)
    prom.wait_for('rag_canary_errors{service="rag"}')
    rollout = await start(api)
    await wait_phase(api, rollout["id"], 1, "hold")
    await asyncio.sleep(4)  # longer than the window: a soft failure holds whatever the hard gates say
    body = (await call(api, "GET", f"/v1/rollouts/current?id={rollout['id']}"))[1]
    soft = [r for r in body["rollout"]["phases"]["1"]["last"]["readings"] if r["kind"] == "soft"]
    assert body["rollout"]["phases"]["1"]["last"]["decision"] == "hold" and w.weight() == 10
    assert soft[0]["passed"] is False and soft[0]["limit"] == pytest.approx(0.55)
    slow["on"] = False
    ended = await wait_end(api, rollout["id"])
    final = (await call(api, "GET", f"/v1/rollouts/current?id={rollout['id']}"))[1]
    assert ended["state"] == "resolved" and final["rollout"]["outcome"] == "promoted"
    await daemon.core.notify.drain()
    roots = [m for m in slack_recorder.roots() if "Rolling out" in m.text]
    assert len(roots) == 1, [m.text for m in slack_recorder.roots()]  # one thread per rollout
    thread = [m.text for m in slack_recorder.thread(roots[0].ts)]
    held = [t for t in thread if "phase 2 (10 %): HOLD" in t]
    assert held and "latency_p95" in held[0] and "0.9" in held[0] and "0.55" in held[0] and "FAIL" in held[0]
    assert len(held) == 1  # a hold is told once, not every interval
    for n, weight in enumerate((1, 10, 50, 100), start=1):
        assert any(f"phase {n} ({weight} %): PROMOTE" in t for t in thread), thread


async def test_human_hold_promote_and_abort_are_journaled(
    daemon: Any, exporter: MetricsExporter, prom: PrometheusServer
) -> None:
    w, api = daemon.world, daemon.api
    ro.feed(exporter, w, errors=lambda w: 0.0, p95=lambda w: 0.5)
    prom.wait_for('rag_canary_errors{service="rag"}')
    rollout = await start(api)
    status, refused = await call(api, "POST", "/v1/trigger", {"reason": "a second incident"})
    assert status == 409, refused  # one rollout or incident per service
    assert (await call(api, "POST", "/v1/rollouts", {"version": "v3", "digest": DIGEST2}))[0] == 409
    await wait_phase(api, rollout["id"], 0, "wait")
    assert (await call(api, "POST", f"/v1/rollouts/{rollout['id']}/hold", {"reason": "lunch"}))[0] == 202
    await wait_phase(api, rollout["id"], 0, "hold")
    await asyncio.sleep(4)
    assert w.weight() == 1  # held past the window
    assert (await call(api, "POST", f"/v1/rollouts/{rollout['id']}/promote", {"reason": "looks fine"}))[0] == 202
    body = await wait_phase(api, rollout["id"], 0, "promote")
    assert body["rollout"]["phases"]["0"]["last"]["why"] == "promoted by tester"
    await wait_phase(api, rollout["id"], 1, "wait")
    assert w.canary() == "v2"
    status, body = await call(api, "POST", f"/v1/rollouts/{rollout['id']}/abort", {"reason": "kill switch"})
    assert status == 202 and w.weight() == 0 and body["state"] == "aborted", body
    assert w.canary() is None  # no users, and no canary left running the release's background work
    events = (await call(api, "GET", f"/v1/incidents/{rollout['id']}"))[1]["events"]
    controls = [(e["actor"], e["data"]["kind"]) for e in events if e["kind"] == "rollout_control"]
    assert {("tester", "hold"), ("tester", "promote"), ("tester", "abort"), ("rollbackd", "canary_removed")} <= set(
        controls
    )


async def test_an_abort_whose_canary_cannot_be_removed_still_aborts_and_says_so(
    daemon: Any, exporter: MetricsExporter, prom: PrometheusServer, slack_recorder: SlackRecorder
) -> None:
    w, api = daemon.world, daemon.api
    prom.wait_for('rag_canary_errors{service="rag"}')
    rollout = await start(api)
    await wait_phase(api, rollout["id"], 0, "wait")
    w.canary_file.unlink()
    (w.canary_file / "pinned").mkdir(parents=True)  # the remove command fails on it (a directory)
    status, body = await call(api, "POST", f"/v1/rollouts/{rollout['id']}/abort", {"reason": "kill switch"})
    assert status == 202 and w.weight() == 0 and body["state"] == "aborted", body
    events = (await call(api, "GET", f"/v1/incidents/{rollout['id']}"))[1]["events"]
    (removal,) = [e["data"] for e in events if e["data"].get("kind") == "canary_removed"]
    assert removal["removed"] is False and "rollout canary remove" in removal["error"], removal
    await daemon.core.notify.drain()
    (root,) = [m for m in slack_recorder.roots() if "Rolling out" in m.text]
    told = [m.text for m in slack_recorder.thread(root.ts) if "could NOT be removed" in m.text]
    assert told and "v2" in told[0] and "remove it by hand" in told[0], told


async def test_a_rollback_alert_during_a_rollout_rolls_it_back_not_a_second_incident(
    daemon: Any, exporter: MetricsExporter, prom: PrometheusServer
) -> None:
    w, api = daemon.world, daemon.api
    ro.feed(exporter, w, errors=lambda w: 0.0, p95=lambda w: 0.5)
    prom.wait_for('rag_canary_errors{service="rag"}')
    rollout = await start(api)
    await wait_phase(api, rollout["id"], 0, "wait")
    status, _ = await asyncio.to_thread(
        api.webhook, relabel(load_fixture("alertmanager-0.25-firing.json"), alertname="CanaryErrors", service="rag")
    )
    assert status == 202
    ended = await wait_end(api, rollout["id"])
    body = (await call(api, "GET", f"/v1/rollouts/current?id={rollout['id']}"))[1]
    assert ended["state"] == "resolved" and body["rollout"]["outcome"] == "rolled_back", body
    assert "alert:CanaryErrors" in body["rollout"]["rolled_back"]["why"]
    assert w.weight() == 0 and w.rollback_log.read_text() == "rolled back\n"
    incidents = (await call(api, "GET", "/v1/incidents?service=rag"))[1]
    assert [i["id"] for i in incidents["incidents"]] == [rollout["id"]]  # no second incident
    decisions = [e for e in ended["events"] if e["kind"] == "rollout_control" and e["data"]["kind"] == "alert"]
    assert decisions and decisions[0]["actor"] == "alertmanager"


async def test_a_rollout_without_prometheus_is_refused(tmp_path: Path) -> None:
    w = ro.world(tmp_path / "world")
    cfg = write_config(tmp_path, services={"rag": ro.service(w)})
    async with running_daemon(cfg) as d:
        api = Api(d.url)
        await green_v1(api, baseline=None)
        status, body = await call(api, "POST", "/v1/rollouts", {"version": "v2", "digest": DIGEST2})
        assert status == 400 and "prometheus.url" in json.dumps(body), body
        assert (await call(api, "GET", "/v1/incidents"))[1]["incidents"] == []


async def test_a_canary_a_crash_left_after_an_abort_goes_at_the_next_start(
    tmp_path: Path, prom: PrometheusServer, exporter: MetricsExporter, slack_recorder: SlackRecorder, monkeypatch: Any
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack_recorder.token)
    w = ro.world(tmp_path / "world")
    cfg = config(tmp_path, w, prom, slack_recorder)
    ro.feed(exporter, w, errors=lambda w: 0.0, p95=lambda w: 0.5)
    async with running_daemon(cfg) as d:
        api = Api(d.url)
        prom.wait_for('rag_canary_errors{service="rag"}')
        await green_v1(api)
        rollout = await start(api)
        await wait_phase(api, rollout["id"], 0, "wait")
        d.core.runner.on_finished.clear()  # as if killed between the rollout's end and the canary's removal
        status, body = await call(api, "POST", f"/v1/rollouts/{rollout['id']}/abort", {"reason": "kill switch"})
        assert status == 202 and body["state"] == "aborted" and w.canary() == "v2", body
    async with running_daemon(cfg) as d:
        api = Api(d.url)
        assert w.canary() is None  # removed at the start, before the API listened
        events = (await call(api, "GET", f"/v1/incidents/{rollout['id']}"))[1]["events"]
        assert [e["data"]["removed"] for e in events if e["data"].get("kind") == "canary_removed"] == [True]
    async with running_daemon(cfg) as d:  # tried once: a third start does not try again
        events = (await call(Api(d.url), "GET", f"/v1/incidents/{rollout['id']}"))[1]["events"]
        assert len([e for e in events if e["data"].get("kind") == "canary_removed"]) == 1
