"""A rollout with replicas on one Postgres journal: started on a follower, run by the leader only (its
writes fenced like an incident's); kill -9 of the leader mid-phase, the other replica takes the lead
and the rollout goes on from its journal to 100 %, recorded and green once."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import rollout as ro
from tests.support.daemon import DaemonProcess, Replicas, replica_configs
from tests.support.pg import drop_database_sync, fresh_database_sync
from tests.support.prometheus import MetricsExporter, PrometheusServer, ScrapeTarget

DIGEST1 = "sha256:" + "1" * 64
DIGEST2 = "sha256:" + "2" * 64


@pytest.fixture
def dsn() -> object:
    name = fresh_database_sync("rollout_ha")
    yield name
    drop_database_sync(name)


@contextlib.contextmanager
def rollout_on_a_follower(
    tmp_path: Path, dsn: str, window: str
) -> Iterator[tuple[ro.World, Replicas, DaemonProcess, DaemonProcess, dict[str, Any]]]:
    """Two replicas, v1 green, a rollout of v2 started on the follower: (world, replicas, leader,
    follower, the rollout)."""
    w = ro.world(tmp_path / "world")
    with (
        MetricsExporter() as exporter,
        PrometheusServer(targets=[ScrapeTarget("rag", exporter.address, labels={"service": "rag"})]) as prom,
    ):
        ro.feed(exporter, w, errors=lambda w: 0.0, p95=lambda w: 0.5)
        prom.wait_for('rag_live_p95{service="rag"}')
        configs = replica_configs(
            tmp_path,
            2,
            services={"rag": ro.service(w, window=window, interval="300ms")},
            dsn=dsn,
            prometheus={"url": prom.url},
        )
        with Replicas(configs) as rs:
            leader = rs.wait_leader()
            (follower,) = rs.followers(leader)
            assert follower.api.call("POST", "/v1/releases", {"version": "v1", "digest": DIGEST1})[0] == 201
            assert follower.api.call("POST", "/v1/releases/v1/green", {"reason": "green"})[0] == 200
            status, rollout = follower.api.call("POST", "/v1/rollouts", {"version": "v2", "digest": DIGEST2})
            assert status == 202, rollout
            yield w, rs, leader, follower, rollout


def test_a_rollout_runs_on_the_leader_and_survives_its_death(tmp_path: Path, dsn: str) -> None:
    with rollout_on_a_follower(tmp_path, dsn, window="2s") as (w, rs, leader, follower, rollout):
        deadline = time.monotonic() + 30
        while w.weight() != 10:  # the leader runs it: phase 2 reached
            assert time.monotonic() < deadline, w.weight()
            time.sleep(0.05)
        events = leader.api.call("GET", f"/v1/incidents/{rollout['id']}")[1]["events"]
        leader.kill9()
        new = rs.wait_leader(exclude=leader)
        assert new is follower
        deadline = time.monotonic() + 90
        while (body := new.api.call("GET", f"/v1/incidents/{rollout['id']}")[1])["state"] == "running":
            assert time.monotonic() < deadline, body["rollout"]
            time.sleep(0.2)
        releases = new.api.call("GET", "/v1/releases")[1]["releases"]
    assert body["state"] == "resolved" and body["rollout"]["outcome"] == "promoted", body["rollout"]
    assert [body["rollout"]["phases"][str(i)]["last"]["decision"] for i in range(4)] == ["promote"] * 4
    assert body["rollout"]["phases"]["0"]["state"]["started_at"] < body["rollout"]["phases"]["1"]["state"]["started_at"]
    assert [r["version"] for r in releases].count("v2") == 1 and w.live() == "v2" and w.canary() is None
    assert any(e["kind"] == "rollout_start" for e in events)


def test_an_abort_sent_to_a_follower_stops_the_rollout_and_the_leader_removes_the_canary(
    tmp_path: Path, dsn: str
) -> None:
    with rollout_on_a_follower(tmp_path, dsn, window="60s") as (w, _, leader, follower, rollout):
        deadline = time.monotonic() + 30
        while w.weight() != 1 or w.canary() != "v2":  # the leader runs phase 1 (a 60 s window)
            assert time.monotonic() < deadline, (w.weight(), w.canary())
            time.sleep(0.05)
        path = f"/v1/rollouts/{rollout['id']}/abort"
        status, body = follower.api.call("POST", path, {"reason": "kill switch"})
        assert status == 202 and w.weight() == 0, body  # weight 0 at once, wherever the abort lands
        deadline = time.monotonic() + 30
        while (body := leader.api.call("GET", f"/v1/incidents/{rollout['id']}")[1])["state"] == "running":
            assert time.monotonic() < deadline, body["state"]
            time.sleep(0.1)
        removals: list[dict[str, Any]] = []
        while not removals:  # removed by the leader, which ended it, and journaled after the removal
            assert time.monotonic() < deadline, w.canary()
            time.sleep(0.1)
            events = leader.api.call("GET", f"/v1/incidents/{rollout['id']}")[1]["events"]
            removals = [e for e in events if e["data"].get("kind") == "canary_removed"]
    assert body["state"] == "aborted" and w.live() == "v1" and w.canary() is None
    assert [(e["actor"], e["data"]["removed"]) for e in removals] == [("rollbackd", True)]
