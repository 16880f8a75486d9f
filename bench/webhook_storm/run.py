"""Webhook storm: every body mode side by side in one run, each against the bare aiohttp handler (run just
before it) and a fresh rollbackd per mode, for the SQLite and the Postgres journal. wrk on loopback, a Lua
script building each request's body (load.py):

  identical      the very same bytes every time (Alertmanager's retries; the body-digest cache path)
  other-bytes    the same alert in other bytes (another groupKey): parsed, then a known duplicate
  distinct       a distinct alert per request (fingerprint, instance), notify-only, one service
  groups-50      a distinct alert and group per request across 50 services

Each row: req/s, ratio to bare, p50 and p99. With ``--repeat N`` each mode runs N times (bare handler,
then a fresh rollbackd, each time): the row is the run of median ratio, with the range of ratios and
the median and worst p99 (single runs vary by about 20 % here); goals are judged on the medians.
Then act latency under noise: a rollback alert mixed about 1 in 1000 into a distinct-alert storm
across the 50 services; webhook received -> first step started.

    .venv/bin/python bench/webhook_storm/run.py [--seconds 8] [--connections 32] [--stores sqlite,postgres] [--repeat 3]
    .venv/bin/python bench/webhook_storm/run.py --big-body [--runs 5]   # one 1 MiB body: see big_body.py
    .venv/bin/python bench/webhook_storm/run.py --ladder               # where the time goes: see ladder.py

Goals: identical >= 0.5x, distinct >= 0.25x, p99 <= 20 ms for every mode; act latency p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "daemon")]

from bench.webhook_storm import load  # noqa: E402
from tests.support.daemon import DaemonProcess, command_service, free_port, secret_ref, write_config  # noqa: E402
from tests.support.pg import drop_database_sync, fresh_database_sync  # noqa: E402

SERVICES = 50
PLAN = [{"type": "command", "name": "noop", "argv": ["/bin/true"]}]


def fixture() -> dict[str, Any]:
    return json.loads((REPO / "tests" / "fixtures" / "alertmanager-0.25-firing.json").read_text())


def template(*, alertname: str, service: str, fingerprint: str, group: str, instance: str) -> str:
    body = fixture()
    labels = {**body["alerts"][0]["labels"], "alertname": alertname, "service": service, "instance": instance}
    body["alerts"][0].update(labels=labels, fingerprint=fingerprint)
    body.update(
        commonLabels=labels,
        groupLabels={"alertname": alertname, "service": service},
        groupKey=f'{{}}:{{alertname="{alertname}", service="{service}", g="{group}"}}',
    )
    return json.dumps(body)


MODES: dict[str, str] = {
    "identical": template(
        alertname="RAGGateFailRateHigh", service="rag", fingerprint="e07521b485271af4", group="g", instance="i"
    ),
    "other-bytes": template(
        alertname="RAGGateFailRateHigh", service="rag", fingerprint="e07521b485271af4", group="@@TAG@@", instance="i"
    ),
    "distinct": template(
        alertname="DependencyDown", service="rag", fingerprint="@@TAG@@", group="g", instance="@@TAG@@"
    ),
    "groups-50": template(
        alertname="DependencyDown", service="@@SVC@@", fingerprint="@@TAG@@", group="@@TAG@@", instance="@@TAG@@"
    ),
}
GOAL_RATIO = {"identical": 0.5, "other-bytes": 0.0, "distinct": 0.25, "groups-50": 0.25}


def services(**policy: Any) -> dict[str, Any]:
    return {name: command_service(PLAN, **policy) for name in ["rag", *(f"svc{n}" for n in range(SERVICES))]}


@contextmanager
def daemon(work: Path, store: str, acceptors: int, **policy: Any) -> Iterator[DaemonProcess]:
    dsn = fresh_database_sync("storm") if store == "postgres" else None
    state = (
        {"type": "postgres", "dsn": secret_ref("STORM_STATE_DSN", dsn), "max_size": 4}
        if dsn
        else {"type": "sqlite", "path": str(work / "state.db")}
    )
    proc = DaemonProcess(
        write_config(work, services=services(**policy), state=state, webhook={"acceptors": acceptors}),
        env={"ROLLBACKD_LOG_LEVEL": "warning"},
    )
    proc.start()
    try:
        serving(proc, acceptors)
        yield proc
    finally:
        proc.stop()
        if dsn:
            drop_database_sync(dsn)


def serving(proc: DaemonProcess, acceptors: int, timeout: float = 30) -> None:
    """Wait until the daemon's acceptors serve (it answers alone until then: wrk's connections, made
    once at its start, would all be the daemon's)."""
    deadline = time.monotonic() + timeout
    while acceptors and time.monotonic() < deadline:
        _, text = proc.api.call("GET", "/metrics")
        if f"\nrollbackd_acceptors {float(acceptors)}\n" in text.decode():
            return
        time.sleep(0.1)
    if acceptors:
        raise SystemExit(f"the daemon's {acceptors} acceptor(s) did not serve within {timeout}s")


@contextmanager
def bare_handler() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bare.py")), str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/", timeout=1)
            break
        except Exception as exc:
            if getattr(exc, "code", None):
                break
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait()


def table(args: argparse.Namespace, store: str, work: Path, modes: dict[str, str]) -> dict[str, load.Result]:
    """Each mode ``--repeat`` times, bare handler then a fresh rollbackd each time; the row is the run
    of median ratio, with the range of ratios, the median p99 and the worst; the goals are judged on
    the medians."""
    results: dict[str, load.Result] = {}
    for mode, body in modes.items():
        runs = [side_by_side(args, store, work, mode, body, rep) for rep in range(args.repeat)]
        (base, got), spread = load.by_median(runs)
        results[mode] = got
        p99s = sorted(run[1].p99_ms for run in runs)
        ratio, p99 = load.ratio((base, got)), p99s[(len(p99s) - 1) // 2]
        worst = f" (worst {p99s[-1]:.2f})" if len(runs) > 1 else ""
        ok = ratio >= GOAL_RATIO[mode] and p99 <= 20
        print(
            f"  {store:8s} {mode:12s} bare {base.rps:7.0f} req/s  rollbackd {got.rps:7.0f} req/s  "
            f"ratio {ratio:5.2f}{spread}  p50 {got.p50_ms:6.2f} ms  p99 {p99:6.2f} ms{worst}  "
            f"errors {sum(run[1].errors for run in runs)}  {'OK' if ok else 'MISSED'}",
            flush=True,
        )
    return results


def side_by_side(args: argparse.Namespace, store: str, work: Path, mode: str, body: str, rep: int) -> load.Pair:
    run = f"{store[:2]}{mode[:2]}{rep}{int(time.time() * 1000) % 10**8}"
    opts = {"services": SERVICES, "seconds": args.seconds, "connections": args.connections, "workdir": work}
    with bare_handler() as bare:
        base = load.wrk(bare, body, run=run + "b", **opts)  # type: ignore[arg-type]
    with daemon(work / f"{store}-{mode}-{rep}", store, args.acceptors) as d:
        got = load.wrk(d.url, body, run=run, **opts)  # type: ignore[arg-type]
    return base, got


def act_under_noise(args: argparse.Namespace, store: str, work: Path, storm_rps: float) -> list[float]:
    """Rollback alerts for the 50 services in turn, about 1 per 1,000 storm requests, during a storm."""
    interval = max(0.05, 1000.0 / max(storm_rps, 1.0))
    with daemon(
        work / f"{store}-act", store, args.acceptors, cooldown="0s", budget={"max": 100000}, rollback_alerts=["ActNow"]
    ) as d:
        storm = load.start(
            d.url,
            MODES["groups-50"],
            services=SERVICES,
            run=f"act{store[:2]}",
            seconds=args.act_seconds,
            connections=args.connections,
            workdir=work,
        )
        sent = 0
        deadline = time.monotonic() + args.act_seconds - 1
        while time.monotonic() < deadline:
            status, answer = d.api.webhook(actionable(sent))
            assert status == 202, answer
            sent += 1
            time.sleep(interval)
        out, _ = storm.communicate()
        noise = load.parse(out)
        lat = latencies(d, sent)
    print(
        f"  {store:8s} act under noise: {sent} rollback alerts in a storm of {noise.rps:.0f} req/s "
        f"(errors {noise.errors}), 1 per {noise.rps * interval:.0f} storm requests",
        flush=True,
    )
    return lat


def actionable(n: int) -> dict[str, Any]:
    body = json.loads(
        template(
            alertname="ActNow", service=f"svc{n % SERVICES}", fingerprint=f"act{n:08d}", group=f"act{n}", instance="i"
        )
    )
    return dict(body)


def latencies(d: DaemonProcess, sent: int) -> list[float]:
    incidents = d.api.call("GET", "/v1/incidents?limit=1000")[1]["incidents"]
    assert len(incidents) == sent, (len(incidents), sent)
    out = []
    for incident in incidents:
        done = d.api.wait_incident(incident["id"], ("resolved",), timeout=60)
        first = min(s["started_at"] for s in done["steps"])
        started = datetime.fromisoformat(first.replace("Z", "+00:00")).timestamp()
        out.append(started - done["trigger"]["received_at"])
    return sorted(out)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, round(len(values) * q) - 1))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--act-seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="runs per mode; the row is the median (single runs vary)")
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--acceptors", type=int, default=1, help="webhook.acceptors of the daemon (0: its loop alone)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--big-body", action="store_true", help="time one 1 MiB body of 4,000 alerts instead")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ladder", action="store_true", help="where a distinct alert's time goes: see ladder.py")
    args = ap.parse_args()
    if args.ladder:
        from bench.webhook_storm import ladder

        ladder.main(args.seconds, args.connections, args.repeat)
        return
    if args.big_body:
        from bench.webhook_storm import big_body

        big_body.main(args.runs)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk (scripts/test installs it)")
    modes = {mode: MODES[mode] for mode in args.modes.split(",")}
    work = Path(tempfile.mkdtemp(prefix="storm-"))
    print(
        f"webhook storm: {args.seconds}s per mode x {args.connections} connections, wrk -t2, loopback; "
        f"rollbackd with webhook.acceptors: {args.acceptors}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    for store in args.stores.split(","):
        results = table(args, store, work, modes)
        lat = act_under_noise(args, store, work, results.get("groups-50", load.Result(2000, 0, 0, 0)).rps)
        report: Callable[[float], str] = lambda v: "OK" if v <= 50 else "MISSED"  # noqa: E731
        if not lat:  # a run too short for one rollback alert: say so, not a percentile of nothing
            print(f"  {store:8s} act latency under noise: no incident in {args.act_seconds}s  MISSED", flush=True)
            continue
        print(
            f"  {store:8s} act latency under noise ({len(lat)} incidents)  p50 {pct(lat, 0.5):.2f} ms  "
            f"p99 {pct(lat, 0.99):.2f} ms  goal <= 50 ms {report(pct(lat, 0.99))}",
            flush=True,
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f} (2 cores, shared)")
    shutil.rmtree(work, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    main()
