"""The MTTR breakdown as a table: stage | start (s after the fault) | duration | note, from the journal (the
incident and its steps, read through rollbackd's API), the safety snapshot's manifests, Prometheus and
Alertmanager (AlertWatch) and the client that polled the service (Poller)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.mttr.probes import AlertSeen, Outage, Poller, parse_ts

QDRANT_NOTE = "Qdrant test server, not Qdrant's speed"
BUDGET_S = 30.0
DOWNTIME_GOAL_S = 5.0


@dataclass(frozen=True, slots=True)
class Row:
    stage: str
    start: float | None
    duration: float | None
    note: str = ""


@dataclass(slots=True)
class Inputs:
    fault_at: float
    factor: int
    incident: dict[str, Any]
    safety: dict[str, Any] | None  # the safety snapshot set (manifests), if found
    alert: AlertSeen | None
    active_at_fallback: float | None  # ALERTS_FOR_STATE's value, if the watch missed the pending state
    poller: Poller
    setup: dict[str, Any] = field(default_factory=dict)


def _num(value: float | None, width: int = 8) -> str:
    return f"{value:{width}.3f}" if value is not None else " " * (width - 1) + "-"


def table(rows: Iterable[Row]) -> str:
    lines = [f"{'stage':<58} {'start':>8} {'duration':>9}  note", "-" * 110]
    for r in rows:
        lines.append(f"{r.stage:<58} {_num(r.start)} {_num(r.duration, 9)}  {r.note}".rstrip())
    return "\n".join(lines)


class Breakdown:
    def __init__(self, inp: Inputs) -> None:
        self.inp = inp
        self.t0 = inp.fault_at
        self.steps = {s["name"]: s for s in inp.incident.get("steps", [])}  # step names default to their type
        trigger = inp.incident.get("trigger") or {}
        self.received = parse_ts(trigger.get("received_at"))
        self.created = parse_ts(inp.incident.get("created_at"))

    def rel(self, ts: float | None) -> float | None:
        return None if ts is None else ts - self.t0

    def step_times(self, kind: str) -> tuple[float | None, float | None]:
        step = self.steps.get(kind) or {}
        return parse_ts(step.get("started_at")), parse_ts(step.get("finished_at"))

    def step_row(self, kind: str, label: str, note: str = "") -> Row:
        start, end = self.step_times(kind)
        step = self.steps.get(kind) or {}
        state = step.get("state", "missing")
        note = note if state == "done" else f"{state}: {step.get('error') or ''} {note}".strip()
        return Row(label, self.rel(start), None if start is None or end is None else end - start, note)

    def output(self, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = (self.steps.get(kind) or {}).get("output") or {}
        return out

    # ---- the alert chain ------------------------------------------------------------------------
    def alert_rows(self) -> list[Row]:
        seen = self.inp.alert
        active = (seen.active_at if seen else None) or self.inp.active_at_fallback
        fired = (seen.am_starts_at if seen else None) or (seen.firing_seen if seen else None)
        name = (self.inp.incident.get("trigger") or {}).get("alertname") or "?"
        window = "[3m]" if self.inp.factor == 1 else f"[3m] / {self.inp.factor}"
        for_note = "`for: 3m`" if self.inp.factor == 1 else f"`for: 3m` / {self.inp.factor}"
        group = "group_wait 10s" if self.inp.factor == 1 else "group_wait 1s (time-compressed stack)"
        rows = [
            Row(
                "evaluation/window delay (fault -> rule pending)",
                0.0,
                self.rel(active),
                f"{name}: the fail ratio over {window} climbs past 7 %; scrape/eval 1 s"
                if name == "RAGGateFailRateHigh"
                else f"{name}: its expression turns true; scrape/eval 1 s",
            ),
            Row(
                f"rule pending -> firing ({for_note})",
                self.rel(active),
                None if active is None or fired is None else fired - active,
                "Prometheus activeAt -> FiredAt (Alertmanager startsAt)",
            ),
            Row(
                "Alertmanager grouping + send (firing -> webhook received)",
                self.rel(fired),
                None if fired is None or self.received is None else self.received - fired,
                group,
            ),
        ]
        if seen is not None and seen.am_seen is not None:
            rows.append(Row("  . first listed by Alertmanager's API (0.25 s polls)", self.rel(seen.am_seen), None))
        return rows

    def decision_rows(self) -> list[Row]:
        first = min(
            (t for t in (parse_ts(s.get("started_at")) for s in self.steps.values()) if t is not None), default=None
        )
        return [
            Row(
                "decision: webhook received -> incident created",
                self.rel(self.received),
                None if self.received is None or self.created is None else self.created - self.received,
                "policy, confirm in Prometheus, target chosen",
            ),
            Row(
                "decision: incident created -> first step started",
                self.rel(self.created),
                None if first is None or self.created is None else first - self.created,
            ),
        ]

    # ---- the plan's steps -----------------------------------------------------------------------
    def safety_rows(self) -> list[Row]:
        rows = [
            self.step_row(
                "snapshot.safety",
                "safety snapshot (snapshot.safety)",
                f"{(self.output('snapshot.safety').get('bytes') or 0) / 2**20:.0f} MB",
            )
        ]
        manifests = (self.inp.safety or {}).get("manifests") or {}
        pg = (manifests.get("postgres") or {}).get("durations") or {}
        qd = (manifests.get("qdrant") or {}).get("durations") or {}
        if pg:
            rows.append(
                Row(
                    "  . Postgres pg_dump -Fd -j2 (parallel with Qdrant)",
                    None,
                    pg.get("total_s"),
                    f"dump {pg.get('dump_s')} s",
                )
            )
        if qd:
            rows.append(
                Row(
                    "  . Qdrant snapshot create + download",
                    None,
                    qd.get("total_s"),
                    f"{QDRANT_NOTE}; create {qd.get('create_s')} s",
                )
            )
        return rows

    def prepare_rows(self) -> list[Row]:
        rows = [self.step_row("data.prepare", "prepare (data.prepare: restore aside, re-hash alongside)")]
        restored = self.output("data.prepare").get("restored") or {}
        pg = (restored.get("postgres") or {}).get("durations") or {}
        qd = (restored.get("qdrant") or {}).get("durations") or {}
        if pg:
            vacuum = pg.get("vacuum_analyze_s", pg.get("analyze_s"))
            rows.append(
                Row(
                    "  . Postgres pg_restore -j2 + counts + VACUUM ANALYZE",
                    None,
                    pg.get("total_s"),
                    f"restore {pg.get('restore_s')} s, vacuum analyze {vacuum} s",
                )
            )
        if qd:
            rows.append(Row("  . Qdrant snapshot recover + point count", None, qd.get("restore_s"), QDRANT_NOTE))
        return rows

    def swap_rows(self) -> list[Row]:
        rows = [self.step_row("data.swap", "swap (data.swap: database rename, alias switch)")]
        downtime = self.output("data.swap").get("downtime_s") or {}
        for store, value in downtime.items():
            note = "journaled downtime" + (f"; {QDRANT_NOTE}" if store == "qdrant" else "")
            rows.append(Row(f"  . {store} swap window", None, value, note))
        return rows

    def deploy_rows(self) -> list[Row]:
        out = self.output("deploy.revert")
        rows = [
            self.step_row(
                "deploy.revert", "deploy (deploy.revert: v2 -> v1 container)", f"deploy_s {out.get('deploy_s')}"
            )
        ]
        for c in out.get("containers") or []:
            rows.append(
                Row("  . stop old -> new started (stop_start_s)", None, c.get("stop_start_s"), "journaled downtime")
            )
        rows.append(
            Row("  . started -> healthy (healthy_after_s)", None, out.get("healthy_after_s"), "journaled downtime")
        )
        return rows

    def verify_rows(self) -> list[Row]:
        rows = [self.step_row("verify", "verify (all verifiers in parallel)")]
        for r in self.output("verify").get("results") or []:
            rows.append(
                Row(
                    f"  . {r.get('verifier')}",
                    None,
                    r.get("duration_s"),
                    f"{r.get('verdict')}, {r.get('attempts')} attempt(s)",
                )
            )
        return rows

    def rows(self) -> list[Row]:
        return [
            *self.alert_rows(),
            *self.decision_rows(),
            *self.safety_rows(),
            *self.prepare_rows(),
            self.step_row("traffic.cut", "traffic cut (traffic.cut: weight 0)"),
            *self.swap_rows(),
            *self.deploy_rows(),
            *self.verify_rows(),
            self.step_row("traffic.restore", "traffic restore (traffic.restore: weight 100)"),
            *self.cleared_rows(),
        ]

    def cleared_rows(self) -> list[Row]:
        if "alert_cleared" not in self.steps:
            return []
        return [
            self.step_row(
                "alert_cleared",
                "alert cleared (verify: alert_cleared, users back on v1)",
                "the rule's window draining; the incident resolves at its end",
            )
        ]

    # ---- totals and goals -----------------------------------------------------------------------
    def journaled_downtime(self) -> float:
        swap = sum(float(v or 0) for v in (self.output("data.swap").get("downtime_s") or {}).values())
        out = self.output("deploy.revert")
        deploy = sum(float(c.get("stop_start_s") or 0) for c in out.get("containers") or [])
        return swap + deploy + float(out.get("healthy_after_s") or 0)

    def poller_lines(self) -> list[str]:
        poller = self.inp.poller
        outages = poller.outages()
        lines = [
            f"poller: GET {poller.url} every {poller.interval * 1000:.0f} ms from the fault to the end: "
            f"{len(poller.probes)} probes, {sum(1 for p in poller.probes if not p.ok)} failed"
        ]
        for o in outages:
            lines.append(
                f"  unavailable at +{o.start - self.t0:8.3f} s for {o.duration:6.3f} s "
                f"({o.failed} failed probes: {', '.join(o.details)}) during {self.during(o)}"
            )
        for at, version in poller.version_changes():
            lines.append(f"  answering version {version} from +{at - self.t0:8.3f} s")
        slow = poller.slowest()
        if slow is not None:
            lines.append(f"  slowest good answer {slow.end - slow.start:.3f} s at +{slow.start - self.t0:.3f} s")
        cut, _ = self.step_times("traffic.cut")
        _, restored = self.step_times("traffic.restore")
        if cut is not None and restored is not None:
            lines.append(
                f"  traffic weight 0 (the load balancer's fallback serves users) from +{cut - self.t0:.3f}"
                f" s for {restored - cut:.3f} s (cut -> restored; the poller bypasses the balancer)"
            )
        return lines

    def during(self, outage: Outage) -> str:
        hits = []
        for kind in ("snapshot.safety", "data.prepare", "traffic.cut", "data.swap", "deploy.revert", "verify"):
            start, end = self.step_times(kind)
            if start is not None and end is not None and outage.start < end and outage.end > start:
                hits.append(kind)
        return ", ".join(hits) or "no step"

    def goal_lines(self) -> list[str]:
        _, verified = self.step_times("verify")
        prepare = (self.steps.get("data.prepare") or {}).get("duration_s")
        lines = []
        if verified is not None and self.received is not None and prepare is not None:
            took = verified - self.received
            budget = BUDGET_S + float(prepare)
            lines.append(
                f"verified {took:.3f} s after the alert arrived; budget 30 s + prepare {float(prepare):.3f} s"
                f" = {budget:.3f} s -> {'OK' if took <= budget else 'MISSED'}"
            )
            _, cleared = self.step_times("alert_cleared")
            if cleared is not None:
                lines.append(
                    f"  alert cleared {cleared - self.received:.3f} s after it arrived (the rule's window "
                    "draining with users back on the service; the incident resolves then)"
                )
        else:
            lines.append("verified: no verified rollback (see the verify row) -> MISSED")
        journaled = self.journaled_downtime()
        seen = sum(o.duration for o in self.inp.poller.outages())
        ok = max(journaled, seen) < DOWNTIME_GOAL_S
        lines.append(
            f"user-visible downtime (swap + deploy) {journaled:.3f} s (journaled) / {seen:.3f} s (seen by "
            f"the poller) < 5 s -> {'OK' if ok else 'MISSED'}"
        )
        finished = parse_ts(self.inp.incident.get("finished_at"))
        if verified is not None:
            lines.append(
                f"fault -> verified {verified - self.t0:.3f} s; fault -> incident "
                f"{self.inp.incident.get('state')} {_num(self.rel(finished), 0).strip()} s"
            )
        return lines

    def render(self) -> str:
        load = os.getloadavg()
        parts = [
            *[f"{k:<8} {v}" for k, v in self.inp.setup.items()],
            f"noise: 2 cores shared with another engineer's drill tests; load average now {load[0]:.2f} "
            f"{load[1]:.2f} {load[2]:.2f}. Single runs vary: compare runs on a quiet machine.",
            "",
            table(self.rows()),
            "",
            f"Qdrant lines ({QDRANT_NOTE}): they time tests/qdrant_server, a Python stand-in holding every point "
            "in memory; a real Qdrant node's snapshot, recovery and alias switch take their own time.",
            "",
            *self.poller_lines(),
            "",
            *self.goal_lines(),
        ]
        return "\n".join(parts)
