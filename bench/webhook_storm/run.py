"""Webhook storm: wrk on loopback against rollbackd's authenticated webhook (a real Alertmanager 0.25
payload, so after the first request every one is a duplicate) and, in the same run, against a bare
aiohttp handler. Prints both requests/s, the ratio, rollbackd's p99, the act latency p99 (webhook
received -> first step started, confirm off) over sequential incidents, and the incident count.

    .venv/bin/python bench/webhook_storm/run.py [--seconds 10] [--connections 32] [--incidents 200]
    .venv/bin/python bench/webhook_storm/run.py --big-body [--runs 5]   # one 1 MiB body: see big_body.py

Goals: ratio >= 0.5, p99 <= 20 ms, act latency p99 <= 50 ms, exactly one incident from the storm.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "daemon")]

from tests.support.daemon import (  # noqa: E402
    WEBHOOK_TOKEN,
    Api,
    DaemonProcess,
    command_service,
    free_port,
    write_config,
)

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.body = [==[{body}]==]
"""


def wrk(url: str, body: str, seconds: int, connections: int, workdir: Path) -> tuple[float, float]:
    script = workdir / "post.lua"
    script.write_text(LUA.format(token=WEBHOOK_TOKEN, body=body))
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url + "/v1/webhook/alertmanager"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99, out
    value = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    if "Non-2xx" in out:
        print(out)
    return rps, value


def wait_up(url: str) -> None:
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception as exc:
            if getattr(exc, "code", None):
                return
            time.sleep(0.05)
    raise SystemExit(f"{url} never came up")


def payload(fingerprint: str = "e07521b485271af4") -> dict:
    body = json.loads((REPO / "tests" / "fixtures" / "alertmanager-0.25-firing.json").read_text())
    for alert in body["alerts"]:
        alert["labels"].update(alertname="RAGGateFailRateHigh", service="rag")
        alert["fingerprint"] = fingerprint
    return body


def act_latency(api: Api, count: int) -> list[float]:
    """Sequential incidents; act latency from the journal (trigger received -> first step started)."""
    latencies = []
    for n in range(count):
        status, body = api.webhook(payload(f"act{n:012d}"))
        assert status == 202 and body["decisions"][0]["action"] == "rollback", body
        incident = api.call("GET", "/v1/incidents?limit=1")[1]["incidents"][0]
        done = api.wait_incident(incident["id"], ("resolved",))
        first = min(s["started_at"] for s in done["steps"])
        from datetime import datetime

        started = datetime.fromisoformat(first.replace("Z", "+00:00")).timestamp()
        latencies.append(started - done["trigger"]["received_at"])
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--incidents", type=int, default=200)
    ap.add_argument("--big-body", action="store_true", help="time one 1 MiB body of 4,000 alerts instead")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if args.big_body:
        from bench.webhook_storm import big_body

        big_body.main(args.runs)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk (scripts/test installs it)")
    work = Path(tempfile.mkdtemp(prefix="storm-"))
    body = json.dumps(payload())
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bare.py")), str(bare_port)])
    plan = [{"type": "command", "name": "noop", "argv": ["/bin/true"]}]
    cfg = write_config(work, services={"rag": command_service(plan)})
    storm_daemon = DaemonProcess(cfg, env={"ROLLBACKD_LOG_LEVEL": "warning"})
    try:
        wait_up(f"http://127.0.0.1:{bare_port}/")
        storm_daemon.start()
        base_rps, base_p99 = wrk(f"http://127.0.0.1:{bare_port}", body, args.seconds, args.connections, work)
        rb_rps, rb_p99 = wrk(storm_daemon.url, body, args.seconds, args.connections, work)
        incidents = storm_daemon.api.call("GET", "/v1/incidents?limit=100")[1]["incidents"]
    finally:
        storm_daemon.stop()
        bare.terminate()
        bare.wait()
    act_dir = work / "act"
    act_cfg = write_config(act_dir, services={"rag": command_service(plan, cooldown="0s",
                                                                      budget={"max": 100000})})
    act_daemon = DaemonProcess(act_cfg)
    try:
        act_daemon.start()
        lat = sorted(act_latency(act_daemon.api, args.incidents))
    finally:
        act_daemon.stop()
    p99_act = lat[max(0, int(len(lat) * 0.99) - 1)] * 1000
    ratio = rb_rps / base_rps
    print(f"webhook storm, {args.seconds}s x {args.connections} connections, wrk -t2, same machine, one run")
    print(f"  bare aiohttp handler      {base_rps:10.0f} req/s   p99 {base_p99:6.2f} ms")
    print(f"  rollbackd webhook (auth)  {rb_rps:10.0f} req/s   p99 {rb_p99:6.2f} ms")
    print(f"  ratio rollbackd / bare    {ratio:10.2f}          goal >= 0.50  {'OK' if ratio >= 0.5 else 'MISSED'}")
    print(f"  rollbackd p99             {rb_p99:10.2f} ms       goal <= 20 ms {'OK' if rb_p99 <= 20 else 'MISSED'}")
    print(f"  act latency ({len(lat)} incidents, confirm off)  p50 {statistics.median(lat) * 1000:.2f} ms"
          f"  p99 {p99_act:.2f} ms  goal <= 50 ms {'OK' if p99_act <= 50 else 'MISSED'}")
    print(f"  incidents from the storm  {len(incidents):10d}          goal == 1     "
          f"{'OK' if len(incidents) == 1 else 'MISSED'}")
    shutil.rmtree(work, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    main()
