"""MTTR benchmark: the 3 AM story of tests/e2e/test_three_am.py on a large corpus, timed from fault injection to
a verified rollback, stage by stage.

    .venv/bin/python bench/mttr/run.py [--factor 1] [--mb 250] [--points 100000] [--interval 0.025]

It brings up the end-to-end stack (tests/e2e/stack.py: Postgres, the Qdrant test server, the RAG service v1/v2
on Podman's Docker API, Prometheus with the shipped rules, Alertmanager with the example config, `rollbackd
serve`), grows Postgres to `--mb` MB and puts a collection of `--points` points behind the `docs` alias, records
v1 green and snapshots it, deploys v2 and changes both stores, starts a client polling /healthz every
`--interval` s, injects the gate failure (9 % of answers fail) and waits for the incident to be resolved. It
prints: stage | start (s after the fault) | duration, the downtime the client saw next to the journaled one, and
the goals (verified within 30 s + prepare after the alert arrived; swap + deploy downtime < 5 s).

`--factor 1` (default) runs the shipped rules unchanged (`for: 3m`: several minutes); `--factor 60` divides every
`for:`, range window and offset by 60 and makes Alertmanager's group timings 1 s (as CI's end-to-end test).
Everything it starts is stopped and removed at the end. A benchmark: it prints, it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "daemon"), str(ROOT)]

from bench.mttr import bigdata  # noqa: E402
from bench.mttr.probes import AlertWatch, Poller  # noqa: E402
from bench.mttr.report import Breakdown, Inputs  # noqa: E402
from tests.e2e.config import rollbackd_config  # noqa: E402
from tests.e2e.stack import Stack  # noqa: E402
from tests.support import corpus  # noqa: E402
from tests.support.podman import PodmanService  # noqa: E402

FINAL = ("resolved", "failed", "verification_failed", "verification_inconclusive", "aborted")
REWRITTEN_POINTS = [*range(6, 11), *range(106, 111)]  # the documents change_corpus rewrites (ids in docs order)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def api(stack: Stack, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
    """rollbackd's API (the test client's 30 s timeout is too short for a 250 MB snapshot)."""
    assert stack.daemon is not None
    client = stack.daemon.api
    req = urllib.request.Request(
        client.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {client.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc


def large_corpus(stack: Stack, mb: int, points: int) -> dict[str, Any]:
    log(f"growing Postgres to {mb} MB and loading {points} points into Qdrant ...")
    made = bigdata.grow(stack.dsn, stack.qdrant.url, mb=mb, points=points)
    log(
        f"Postgres {made['db_mb']:.0f} MB in {made['pg_s']:.1f} s; Qdrant {made['points']:.0f} points in "
        f"{made['qdrant_s']:.1f} s"
    )
    return made


def green_v1(stack: Stack) -> dict[str, Any]:
    """The afternoon before: v1 recorded, marked green, its data snapshotted (timed)."""
    api(
        stack,
        "POST",
        "/v1/releases",
        {"version": "v1", "image": "rag:v1", "digest": stack.image_v1, "schema_version": "1"},
    )
    api(stack, "POST", "/v1/releases/v1/green", {"reason": "canary passed, 30 min clean"})
    started = time.monotonic()
    snap = api(stack, "POST", "/v1/snapshots", {"reason": "release v1 green"}, timeout=900)
    took = time.monotonic() - started
    size = float((snap.get("snapshot") or snap).get("size_bytes") or 0)
    log(f"green snapshot of v1: {size / 2**20:.0f} MB in {took:.1f} s")
    return {"green_snapshot_s": took, "green_snapshot_mb": size / 2**20}


def deploy_v2(stack: Stack) -> None:
    """18:00: v2 goes out, and its migration changes the corpus (rows and vectors)."""
    stack.run_release(stack.image_v2)
    api(
        stack,
        "POST",
        "/v1/releases",
        {"version": "v2", "image": "rag:v2", "digest": stack.image_v2, "schema_version": "2"},
    )
    asyncio.run(corpus.change_corpus(stack.dsn))
    asyncio.run(bigdata.change_collection(stack.qdrant.url, rewritten_ids=REWRITTEN_POINTS))
    version = stack.rag_version()
    if version != "v2":
        raise RuntimeError(f"the service answers {version} after deploying v2")
    log("v2 deployed, corpus and collection changed")


def wait_incident(stack: Stack, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    incident_id: str | None = None
    state = ""
    while time.monotonic() < deadline:
        if incident_id is None:
            found = api(stack, "GET", "/v1/incidents")["incidents"]
            if found:
                incident_id = str(found[0]["id"])
                log(f"incident {incident_id} opened ({found[0].get('trigger', {}).get('alertname')})")
        else:
            body: dict[str, Any] = api(stack, "GET", f"/v1/incidents/{incident_id}")
            if body["state"] != state:
                state = body["state"]
                log(f"incident {incident_id}: {state}")
            if state in FINAL:
                return body
        time.sleep(0.25)
    raise TimeoutError(f"no finished incident within {timeout:.0f} s (last state {state or 'none'})")


def safety_set(stack: Stack, incident: dict[str, Any]) -> dict[str, Any] | None:
    steps = {s["type"]: s for s in incident.get("steps", [])}
    set_id = ((steps.get("snapshot.safety") or {}).get("output") or {}).get("snapshot_set")
    for snap in api(stack, "GET", "/v1/snapshots?service=rag").get("snapshots", []):
        if snap.get("id") == set_id:
            return dict(snap)
    return None


def active_at_fallback(stack: Stack, incident: dict[str, Any]) -> float | None:
    """ALERTS_FOR_STATE's value (the rule's activeAt) at the time the webhook arrived."""
    trigger = incident.get("trigger") or {}
    at = trigger.get("received_at")
    if not at or not trigger.get("alertname"):
        return None
    result = stack.prometheus.query(
        f'ALERTS_FOR_STATE{{alertname="{trigger["alertname"]}",service="rag"}}', at=float(at)
    )
    return float(result[0]["value"][1]) if result else None


def story(stack: Stack, args: argparse.Namespace, setup: dict[str, Any]) -> str:
    made = large_corpus(stack, args.mb, args.points)
    green = green_v1(stack)
    setup["corpus"] = (
        f"Postgres {made['db_mb']:.0f} MB (generated in {made['pg_s']:.1f} s), Qdrant "
        f"{made['points']:.0f} points dim 64 (test server, loaded in {made['qdrant_s']:.1f} s); "
        f"green snapshot {green['green_snapshot_mb']:.0f} MB in {green['green_snapshot_s']:.1f} s"
    )
    deploy_v2(stack)
    poller = Poller(f"{stack.rag_url}/healthz", args.interval).start()
    watch = AlertWatch(stack.prometheus, stack.alertmanager).start()
    fault_at = time.time()
    stack.fault(gate_fail_fraction=0.09)  # 03:00: 9 % of answers fail the gates
    log("fault injected: gate_fail_fraction 0.09")
    try:
        incident = wait_incident(stack, args.timeout)
        time.sleep(2.0)  # the poller sees the service settle after the last step
    finally:
        poller.stop()
        watch.stop()
    name = (incident.get("trigger") or {}).get("alertname")
    inputs = Inputs(
        fault_at=fault_at,
        factor=args.factor,
        incident=incident,
        safety=safety_set(stack, incident),
        alert=watch.seen.get(str(name)),
        active_at_fallback=active_at_fallback(stack, incident),
        poller=poller,
        setup=setup,
    )
    return Breakdown(inputs).render()


def describe_setup(args: argparse.Namespace) -> dict[str, Any]:
    rules = "shipped rules unchanged" if args.factor == 1 else f"rules time-compressed by {args.factor}"
    return {
        "run": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "stack": f"factor {args.factor} ({rules}); Prometheus scrape/eval 1 s; rollbackd plan and verifiers "
        "of tests/e2e/config.py",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=1, help="rule time compression (1: the shipped rules)")
    parser.add_argument("--mb", type=int, default=250, help="Postgres database size to reach (MB)")
    parser.add_argument("--points", type=int, default=100_000, help="points in the Qdrant collection")
    parser.add_argument("--interval", type=float, default=0.025, help="the client's polling interval (s)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="seconds to wait for the incident to finish (default: 1200 at factor 1, else 300)",
    )
    args = parser.parse_args()
    args.timeout = args.timeout or (1200.0 if args.factor == 1 else 300.0)
    setup = describe_setup(args)
    workdir = Path(tempfile.mkdtemp(prefix="rollbackd-bench-mttr-"))
    podman = PodmanService()
    try:
        podman.start()
        stack = Stack(workdir / "stack", podman, factor=args.factor)
        try:
            log(f"starting the stack (factor {args.factor}) in {workdir}")
            stack.start(rollbackd_config)
            text = story(stack, args, setup)
        finally:
            log("tearing down the stack")
            stack.stop()
    finally:
        podman.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(text)


if __name__ == "__main__":
    main()
