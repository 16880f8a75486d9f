"""Takeover benchmark: how long a replica set is leaderless after SIGKILL of its leader mid-rollback.

    .venv/bin/python bench/takeover/run.py [--cycles 30] [--replicas 3] [--lease 2s] [--seed N]

Starts ``--replicas`` real `rollbackd serve` processes on a fresh database of the local Postgres
(tests/support/pg.py), then runs the kill cycles of tests/support/failover.py: an alert to every
replica, SIGKILL of the leader at a random point of the rollback, the time until another replica
says it leads (/readyz), the killed one restarted as a follower, the incident finished. It prints
the takeover time p50/p90/p99/max and what became of the incidents. A benchmark: it asserts nothing
about time (the takeover is bounded by the lease plus a third of it, the renewal period).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "daemon"), str(ROOT)]

from tests.support.daemon import Replicas, command_service, replica_configs  # noqa: E402
from tests.support.failover import failover_plan, percentile, run_cycles  # noqa: E402
from tests.support.pg import drop_database_sync, fresh_database_sync  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--lease", default="2s")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    dsn = fresh_database_sync("takeover")
    try:
        with tempfile.TemporaryDirectory(prefix="rb-takeover-") as tmp:
            root = Path(tmp) / "runs"
            root.mkdir()
            svc = command_service(failover_plan(root), cooldown="0s", budget={"max": 10_000, "window": "1h"})
            configs = replica_configs(
                Path(tmp),
                args.replicas,
                services={"rag": svc},
                dsn=dsn,
                lease=args.lease,
                incidents={"kill_grace": "1s"},
            )
            with Replicas(configs) as rs:
                cycles = run_cycles(rs, args.cycles, seed)
                _, body = rs.wait_leader().api.call("GET", "/v1/incidents?limit=1000")
            rerun = (root / "rerun").exists()
    finally:
        drop_database_sync(dsn)
    times = [c.takeover_s for c in cycles if c.takeover_s is not None]
    states: dict[str, int] = {}
    for incident in body["incidents"]:
        states[incident["state"]] = states.get(incident["state"], 0) + 1
    print(
        f"takeover after SIGKILL of the leader: {len(times)} cycles, {args.replicas} replicas, lease {args.lease},"
        f" seed {seed}"
    )
    print(
        f"  p50 {percentile(times, 0.5):.2f}s  p90 {percentile(times, 0.9):.2f}s  "
        f"p99 {percentile(times, 0.99):.2f}s  max {max(times):.2f}s"
    )
    print(
        f"  incidents: {sum(states.values())} ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))});"
        f" steps run twice: {'YES' if rerun else 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
