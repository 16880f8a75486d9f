"""Kill the leader of a replica set in the middle of rollbacks, cycle after cycle (tests and bench).

Each cycle: a new alert (its own fingerprint) is posted to every live replica, as Alertmanager's
receiver with several URLs does; after a random moment of the rollback the leader is killed with
SIGKILL; the time until another replica says it leads is the takeover time; the killed replica
restarts (a follower now) and the incident must end before the next cycle.

The plan's steps are the kill loop's (tests/integration/test_crash_resume.py): a step that starts
although its effect is there (`rerun`) or runs twice at once (`concurrent`) leaves a mark in ``root``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tests.integration.test_crash_resume import _STEP
from tests.support.daemon import Replicas

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "alertmanager-0.25-firing.json"
TERMINAL = ("resolved", "failed", "aborted", "cancelled", "verification_failed", "verification_inconclusive")
STEPS = ("cut", "swap", "deploy", "verify")


def failover_plan(root: Path) -> list[dict[str, Any]]:
    """Four short steps (~1 s in all): a rollback a kill lands in at any point. Each step writes the
    pid of the daemon that runs it to ``root/pids``."""
    who = f'echo "$PPID $ROLLBACKD_INCIDENT_ID $ROLLBACKD_STEP $(date +%s.%N)" >> {root}/pids'

    def step(name: str, seconds: float) -> dict[str, Any]:
        return {
            "type": "command",
            "name": name,
            "timeout": "20s",
            "crash_resumes": 50,
            "argv": ["/bin/sh", "-c", _STEP.format(root=root, extra=who, seconds=seconds)],
            "check": ["/bin/sh", "-c", f'test -f {root}/"$ROLLBACKD_INCIDENT_ID"/"$ROLLBACKD_STEP".done'],
        }

    return [step("cut", 0.2), {"parallel": [step("swap", 0.3), step("deploy", 0.2)]}, step("verify", 0.3)]


def alert(n: int, service: str = "rag", alertname: str = "RAGGateFailRateHigh") -> dict[str, Any]:
    """A firing alert of its own (fingerprint and start differ per ``n``)."""
    payload: dict[str, Any] = copy.deepcopy(json.loads(FIXTURE.read_text()))
    for a in payload["alerts"]:
        a["labels"].update(alertname=alertname, service=service, cycle=str(n))
        a["fingerprint"] = f"failover{n:06d}"
        a["startsAt"] = f"2026-11-21T22:{n // 60 % 60:02d}:{n % 60:02d}.000Z"
    return payload


@dataclass
class Cycle:
    n: int
    incident_id: str | None = None
    killed_after_s: float = 0.0
    takeover_s: float | None = None
    accepted: list[str] = field(default_factory=list)  # fingerprints answered 202 (by any replica)


def post_everywhere(rs: Replicas, n: int, alertname: str = "RAGGateFailRateHigh") -> list[str]:
    accepted: list[str] = []
    for replica in rs.all:
        if replica.alive:
            status, _ = replica.api.webhook(alert(n, alertname=alertname))
            if status == 202:
                accepted.append(f"failover{n:06d}")
    return accepted


def newest_incident(rs: Replicas, known: set[str]) -> str | None:
    """The incident the cycle's alert opened (None: it opened none)."""
    for replica in rs.all:
        if replica.alive:
            status, body = replica.api.call("GET", "/v1/incidents?limit=1")
            if status == 200:
                ids = [str(i["id"]) for i in body["incidents"] if i["id"] not in known]
                return ids[0] if ids else None
    return None


def one_cycle(rs: Replicas, n: int, rng: random.Random, known: set[str]) -> Cycle:
    cycle = Cycle(n)
    leader = rs.wait_leader()
    cycle.accepted = post_everywhere(rs, n)
    cycle.incident_id = newest_incident(rs, known)
    cycle.killed_after_s = rng.uniform(0.0, 1.4)
    time.sleep(cycle.killed_after_s)
    leader.kill9()
    killed = time.monotonic()
    # while nobody leads: alerts are still answered, and what is answered 202 is journaled
    cycle.accepted += post_everywhere(rs, 100_000 + n, alertname="HaProbeWhileLeaderless")
    new = rs.wait_leader(exclude=leader)
    cycle.takeover_s = time.monotonic() - killed
    leader.start()  # back as a follower
    if cycle.incident_id:
        new.api.wait_incident(cycle.incident_id, TERMINAL, timeout=60)
    return cycle


def run_cycles(rs: Replicas, cycles: int, seed: int) -> list[Cycle]:
    rng = random.Random(seed)
    out: list[Cycle] = []
    for n in range(cycles):
        out.append(one_cycle(rs, n, rng, {c.incident_id for c in out if c.incident_id}))
    return out


def journaled_fingerprints(dsn: str) -> set[str]:
    async def fetch() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            return {r["fingerprint"] for r in await conn.fetch("SELECT fingerprint FROM rb_alerts")}
        finally:
            await conn.close()

    return asyncio.run(fetch())


def incident_thread(dsn: str, incident_id: str) -> str | None:
    """The Slack thread reference the journal holds for an incident (JSON text), if any."""

    async def fetch() -> str | None:
        conn = await asyncpg.connect(dsn)
        try:
            found = await conn.fetchval("SELECT thread FROM rb_incidents WHERE id = $1", incident_id)
            return str(found) if found and found != "null" else None
        finally:
            await conn.close()

    return asyncio.run(fetch())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
