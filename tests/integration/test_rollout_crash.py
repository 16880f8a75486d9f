"""kill -9 of the daemon at points spread over a whole rollout (canary, each phase, completion): every
restart resumes the rollout where its journal says, and it ends exactly as an uninterrupted one would:
promoted once, the release recorded once and green, the canary gone; or, with errors at 10 %, rolled
back with users on green."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.support import rollout as ro
from tests.support.daemon import DaemonProcess, write_config
from tests.support.prometheus import MetricsExporter, PrometheusServer, ScrapeTarget

DIGEST1 = "sha256:" + "1" * 64
DIGEST2 = "sha256:" + "2" * 64


def ended(daemon: DaemonProcess, rollout_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = daemon.api.call("GET", f"/v1/incidents/{rollout_id}")
        if status == 200 and body["state"] not in ("pending", "running"):
            return dict(body)
        time.sleep(0.2)
    raise AssertionError(f"rollout {rollout_id} did not end: {body}")


def run_with_kills(
    tmp_path: Path, errors: Any, kill_every: float, kills: int
) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    w = ro.world(tmp_path / "world")
    with (
        MetricsExporter() as exporter,
        PrometheusServer(targets=[ScrapeTarget("rag", exporter.address, labels={"service": "rag"})]) as prom,
    ):
        ro.feed(exporter, w, errors=errors, p95=lambda w: 0.5)
        prom.wait_for('rag_live_p95{service="rag"}')
        cfg = write_config(
            tmp_path, services={"rag": ro.service(w, window="2s", interval="300ms")}, prometheus={"url": prom.url}
        )
        daemon = DaemonProcess(cfg)
        try:
            daemon.start()
            assert daemon.api.call("POST", "/v1/releases", {"version": "v1", "digest": DIGEST1})[0] == 201
            assert daemon.api.call("POST", "/v1/releases/v1/green", {"reason": "green"})[0] == 200
            status, rollout = daemon.api.call("POST", "/v1/rollouts", {"version": "v2", "digest": DIGEST2})
            assert status == 202, rollout
            for _ in range(kills):
                time.sleep(kill_every)
                if daemon.api.call("GET", f"/v1/incidents/{rollout['id']}")[1]["state"] != "running":
                    break
                daemon.kill9()
                assert w.weight() in (0, 1, 10, 50, 100)
                daemon.start()
            final = ended(daemon, rollout["id"])
            releases = daemon.api.call("GET", "/v1/releases")[1]["releases"]
        finally:
            daemon.stop()
    return final, w, releases


def test_kill9_anywhere_in_a_clean_rollout_still_promotes_once(tmp_path: Path) -> None:
    final, w, releases = run_with_kills(tmp_path, lambda w: 0.0, kill_every=1.7, kills=6)
    assert final["state"] == "resolved" and final["rollout"]["outcome"] == "promoted", final
    assert [final["rollout"]["phases"][str(i)]["last"]["decision"] for i in range(4)] == ["promote"] * 4
    assert [r["version"] for r in releases].count("v2") == 1  # recorded once, whatever was interrupted
    v2 = next(r for r in releases if r["version"] == "v2")
    assert v2["green_at"] and w.live() == "v2" and w.canary() is None and w.weight() == 0
    interrupted = [e for e in final["events"] if e["kind"] == "step_interrupted"]
    assert interrupted  # the kills did land inside steps


def test_kill9_during_a_failing_rollout_still_rolls_back_to_green(tmp_path: Path) -> None:
    final, w, releases = run_with_kills(tmp_path, lambda w: 0.3 if w.weight() >= 10 else 0.0, kill_every=1.3, kills=4)
    assert final["state"] == "resolved" and final["rollout"]["outcome"] == "rolled_back", final
    assert final["rollout"]["rolled_back"]["phase"] == 1
    assert w.weight() == 0 and w.live() == "v1" and w.canary() is None
    assert w.rollback_log.read_text().count("rolled back") >= 1
    assert [r["version"] for r in releases] == ["v1"]
