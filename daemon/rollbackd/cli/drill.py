"""`rollbackd drill [--service S] [--reason R] [--json]`: rehearse the rollback on scratch copies and
print the GO/NO-GO report; `rollbackd drill --history` lists past drills. The live data, container and
traffic are never touched.

Exit codes: 0 GO; 4 (EXIT_VERIFY_FAILED) NO-GO; 1 refused (an incident is active, a drill runs) or error.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rollbackd.cli.client import EXIT_OK, EXIT_VERIFY_FAILED, Client
from rollbackd.cli.follow import follow


def _seconds(value: Any) -> str:
    return f"{value:.2f}s" if isinstance(value, int | float) else "-"


def render(report: dict[str, Any]) -> str:
    release = report.get("release") or {}
    lines = [
        f"drill {report['id']} of {report['service']}: {report['verdict']}",
        f"  reason:          {report.get('reason') or '-'}",
        f"  time to restore: {_seconds(report.get('time_to_restore_s'))} (prepare + deploy + verify)",
        f"  release:         {release.get('version') or '-'} (live: {release.get('live') or '-'})"
        f"    snapshot set: {report.get('snapshot_set') or '-'}",
        f"  torn down:       {'yes' if report.get('torn_down') else 'NO: see the teardown stage'}",
        "  stages:",
    ]
    for stage in report.get("stages", []):
        mark = "ok  " if stage.get("ok") else "FAIL"
        lines.append(f"    {stage['name']:<9} {mark} {_seconds(stage.get('seconds')):>8}  {stage.get('detail', '')}")
    if report.get("results"):
        lines.append("  checks (against the scratch copies):")
        for r in report["results"]:
            lines.append(f"    {r['verifier']:<14} {str(r['verdict']).upper():<12} {r.get('summary', '')}")
    lines += [f"  note: {n}" for n in report.get("notes") or []]
    return "\n".join(lines)


def render_history(drills: list[dict[str, Any]]) -> str:
    if not drills:
        return "no drills"
    lines = []
    for d in drills:
        lines.append(
            f"{d['id']}  {d['service']}  {d['verdict']:<6} restore {_seconds(d.get('time_to_restore_s')):>8}"
            f"  {d.get('finished_at') or '-'}  {(d.get('reason') or '')[:60]}"
        )
    return "\n".join(lines)


def cmd_drill(args: argparse.Namespace, client: Client) -> int:
    if args.history:
        query = "?limit=20" + (f"&service={args.service}" if args.service else "")
        body = client.get(f"/v1/drills{query}")
        print(json.dumps(body, indent=2) if args.json else render_history(body["drills"]))
        return EXIT_OK
    started = client.post("/v1/drill", {"service": args.service, "reason": args.reason, "background": True})
    report = started
    if started.get("state") == "running":  # follow the journal with short polls, up to --timeout

        def reported(body: dict[str, Any]) -> bool:
            return any(d.get("id") == started["id"] for d in body.get("drills", []))

        deadline = time.monotonic() + args.timeout
        body = follow(
            client,
            started["follow"] + "&limit=50&wait=20",  # long polls: the report comes at once
            lambda b: reported(b) or time.monotonic() > deadline,
        )
        found = [d for d in body["drills"] if d.get("id") == started["id"]]
        report = (
            found[0]
            if found
            else {
                **started,
                "verdict": "UNKNOWN",
                "notes": [f"no report within {args.timeout:g}s; see drill --history"],
            }
        )
    print(json.dumps(report, indent=2) if args.json else render(report))
    return EXIT_OK if report.get("verdict") == "GO" else EXIT_VERIFY_FAILED


def register(sub: Any, remote: Any) -> None:
    p = remote("drill", cmd_drill, "rehearse the rollback on scratch copies; GO/NO-GO with the time to restore")
    p.add_argument("--service")
    p.add_argument("--reason", default="drill from the CLI")
    p.add_argument("--history", action="store_true", help="list past drills instead of running one")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the drill (default 3600)")
    p.add_argument("--json", action="store_true")
