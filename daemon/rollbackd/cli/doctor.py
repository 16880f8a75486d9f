"""`rollbackd doctor [--config F] [--json] [--send-test-alert]`: check the whole chain from the RAG
service's metrics to a rollback, one line per check with what to do. Exit 0 when nothing failed
(warnings allowed), 1 when a check failed: usable as a CI or deploy gate."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rollbackd.cli.client import EXIT_ERROR, EXIT_OK

DEFAULT_CONFIG = "config/rollbackd.example.yaml"


def cmd_doctor(args: argparse.Namespace) -> int:
    import asyncio

    from rollbackd.doctor.run import diagnose, failed, render_json, render_text
    from rollbackd.errors import ConfigError
    from rollbackd.wiring import load_settings as load

    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(f"{args.config}: invalid configuration (rollbackd check-config {args.config}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_ERROR
    findings = asyncio.run(diagnose(settings, send_test_alert=args.send_test_alert, test_timeout=args.timeout))
    print(render_json(findings) if args.json else render_text(findings))
    return EXIT_ERROR if failed(findings) else EXIT_OK


def register(sub: Any, remote: Any) -> None:
    p = sub.add_parser("doctor", help="check the whole chain: metrics, rules, routing, releases, backends")
    p.add_argument(
        "--config",
        default=os.environ.get("ROLLBACKD_CONFIG", DEFAULT_CONFIG),
        help=f"the daemon's config file (env ROLLBACKD_CONFIG; default {DEFAULT_CONFIG})",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--send-test-alert",
        action="store_true",
        help="post a test alert to Alertmanager and wait for rollbackd to record it (never acted on)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the test alert (default 60)")
    p.set_defaults(local=cmd_doctor)
