"""`scripts/demo`: the 3 AM story on this machine, narrated, with the real output of the CLI.

python -m tests.e2e.demo [--factor 60] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.config import rollbackd_config
from tests.e2e.stack import Stack, wait_until
from tests.support import corpus
from tests.support.daemon import API_TOKEN, REPO
from tests.support.podman import PodmanService


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def cli(stack: Stack, *args: str) -> str:
    assert stack.daemon is not None
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO / "daemon"),
        "ROLLBACKD_URL": stack.daemon.url,
        "ROLLBACKD_API_TOKEN": API_TOKEN,
    }
    out = subprocess.run(
        [sys.executable, "-m", "rollbackd", *args], env=env, capture_output=True, text=True, check=False
    )
    return out.stdout + out.stderr


def story(stack: Stack) -> str:
    assert stack.daemon is not None
    api = stack.daemon.api
    say(f"v1 runs at {stack.rag_url}; the pipeline records it, marks it green, and a snapshot is taken")
    api.call(
        "POST", "/v1/releases", {"version": "v1", "image": "rag:v1", "digest": stack.image_v1, "schema_version": "1"}
    )
    api.call("POST", "/v1/releases/v1/green", {"reason": "demo: canary clean for 30 min"})
    api.call("POST", "/v1/snapshots", {"reason": "demo: release v1 green"})
    print(cli(stack, "release", "list"))
    say("18:00 - v2 is deployed; its migration rewrites part of the corpus")
    stack.run_release(stack.image_v2)
    api.call(
        "POST", "/v1/releases", {"version": "v2", "image": "rag:v2", "digest": stack.image_v2, "schema_version": "2"}
    )
    print(asyncio.run(corpus.change_corpus(stack.dsn))["counts"])
    say("03:00 - 9 % of v2's answers start failing the quality gates")
    fault_at = time.time()
    stack.fault(gate_fail_fraction=0.09)
    incidents = wait_until(
        lambda: api.call("GET", "/v1/incidents")[1]["incidents"], 900, "Prometheus -> Alertmanager -> rollbackd"
    )
    incident_id = incidents[0]["id"]
    say(
        f"rollbackd opened incident {incident_id} ({time.time() - fault_at:.0f}s after the fault); "
        "`rollbackd status` while it runs:"
    )
    print(cli(stack, "status"))
    api.wait_incident(
        incident_id, ("resolved", "failed", "verification_failed", "verification_inconclusive"), timeout=600
    )
    say(f"done {time.time() - fault_at:.0f}s after the fault; the service answers as {stack.rag_version()}")
    return incident_id


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--factor", type=int, default=60, help="rule time compression (1 = the shipped rules)")
    ap.add_argument("--keep", action="store_true", help="keep the stack up afterwards (Ctrl-C to stop)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rollbackd-demo-"))
    with PodmanService() as podman, Stack(work, podman, factor=args.factor) as stack:
        say(
            "starting: Postgres database + corpus, Qdrant test server, RAG v1 container, Prometheus, "
            "Alertmanager, rollbackd"
        )
        stack.start(rollbackd_config)
        incident_id = story(stack)
        say("`rollbackd status`")
        print(cli(stack, "status"))
        say(f"`rollbackd show {incident_id}`")
        print(cli(stack, "show", incident_id))
        say("the weekly rehearsal, by hand: `rollbackd drill` (scratch copies; the live service is not touched)")
        print(cli(stack, "drill"))
        say(f"Slack thread: {len(stack.slack.messages())} messages; workdir {work}")
        if args.keep:
            assert stack.daemon is not None
            print(
                f"\nexport ROLLBACKD_URL={stack.daemon.url} ROLLBACKD_API_TOKEN={API_TOKEN}\n"
                "then try: .venv/bin/rollbackd status | history | show ID | drill | verify ...  (Ctrl-C ends)"
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
