"""The biggest body Alertmanager may send: 1 MiB holding 4,000 distinct valid alerts (most for the `rag`
service: one opens the incident, the others find it active; some resolved, some for an unknown service).
Posted to a real `rollbackd serve` (SQLite journal) a few times, each with fresh fingerprints, so every
alert is decided and journaled. Prints the time to the 202 of each and the worst. Goal: <= 2 s.

    .venv/bin/python bench/webhook_storm/run.py --big-body [--runs 5]
"""

from __future__ import annotations

import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.support.bodies import many_alerts
from tests.support.daemon import WEBHOOK_TOKEN, DaemonProcess, command_service, write_config

GOAL_S = 2.0


def post(url: str, raw: bytes) -> tuple[int, float]:
    req = urllib.request.Request(
        url + "/v1/webhook/alertmanager",
        data=raw,
        method="POST",
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
        return resp.status, time.perf_counter() - started


def main(runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bigbody-"))
    plan = [{"type": "command", "name": "wait", "argv": ["/bin/sleep", "600"]}]
    daemon = DaemonProcess(
        write_config(work, services={"rag": command_service(plan)}), env={"ROLLBACKD_LOG_LEVEL": "warning"}
    )
    bodies = [many_alerts(4000, seed=f"{n:x}") for n in range(runs)]
    try:
        daemon.start()
        results = [post(daemon.url, raw) for raw in bodies]
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"1 MiB webhook body, 4,000 valid alerts, {runs} runs, real daemon (SQLite journal), same machine")
    for n, ((status, seconds), raw) in enumerate(zip(results, bodies, strict=True)):
        print(f"  run {n + 1}: {len(raw):8d} bytes  HTTP {status}  answered in {seconds * 1000:8.1f} ms")
    worst = max(s for _, s in results)
    print(
        f"  worst                     {worst * 1000:8.1f} ms   goal <= {GOAL_S * 1000:.0f} ms  "
        f"{'OK' if worst <= GOAL_S and all(st == 202 for st, _ in results) else 'MISSED'}"
    )
