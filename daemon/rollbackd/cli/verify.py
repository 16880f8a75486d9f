"""`rollbackd verify [--service S] [--only smoke,counts] [--json]`: run the verification checks now,
against the live service, as a deploy or canary gate. It never changes anything.

Exit codes, a gate contract (a pipeline gates on non-zero): 0 PASS, every counted check passed;
4 FAIL, a check found the service wrong; 5 ERROR, no check failed but one could not run (its dependency
unreachable); 6 INCONCLUSIVE, no check failed or errored but not all could prove the service works (too
little evidence, the judge failed, no check counted). 1, 2, 3: the CLI's own errors (API error, usage,
daemon unreachable): no verdict at all.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rollbackd.cli.client import (
    EXIT_OK,
    EXIT_VERIFY_ERROR,
    EXIT_VERIFY_FAILED,
    EXIT_VERIFY_INCONCLUSIVE,
    Client,
)


def render(body: dict[str, Any]) -> str:
    if body.get("dry_run"):
        return "\n".join([f"would verify {body['service']}:", *(f"  {line}" for line in body["would_run"])])
    verdict = str(body.get("verdict") or "?").upper()
    lines = [f"verification of {body['service']}: {verdict}"]
    for r in body.get("results", []):
        mark = " (dry run, not counted)" if r.get("dry_run") else ""
        lines.append(f"  {r['verifier']:<14} {r['verdict'].upper():<12} {r['summary']}{mark}")
    return "\n".join(lines)


def exit_code(body: dict[str, Any]) -> int:
    if body.get("dry_run"):
        return EXIT_OK
    verdicts = {r["verdict"] for r in body.get("results", []) if not r.get("dry_run")}
    if "fail" in verdicts:
        return EXIT_VERIFY_FAILED
    if "error" in verdicts:
        return EXIT_VERIFY_ERROR
    if verdicts == {"pass"} and body.get("verdict") == "pass":
        return EXIT_OK
    return EXIT_VERIFY_INCONCLUSIVE


def cmd_verify(args: argparse.Namespace, client: Client) -> int:
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    client.timeout = max(client.timeout, args.timeout)
    body = client.post("/v1/verify", {"service": args.service, "only": only, "dry_run": args.dry_run})
    print(json.dumps(body, indent=2) if args.json else render(body))
    return exit_code(body)


def register(sub: Any, remote: Any) -> None:
    p = remote("verify", cmd_verify, "run the verification checks now (a deploy gate; changes nothing)")
    p.add_argument("--service")
    p.add_argument("--only", help="comma-separated check names, e.g. smoke,counts")
    p.add_argument("--dry-run", action="store_true", help="list the checks that would run; run none")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the checks (default 900)")
    p.add_argument("--json", action="store_true")
