"""`rollbackd COMMAND`. Exit codes: 0 ok, 1 error, 2 usage, 3 daemon unreachable, 4 verification failed.

Each command is a function taking the parsed arguments; heavy modules are imported inside the
commands that need them, so `rollbackd --help` and `rollbackd status` start instantly.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

from rollbackd import __version__
from rollbackd.cli import render
from rollbackd.cli.client import EXIT_ERROR, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, ApiError, Client, Unreachable

Command = Callable[[argparse.Namespace, Client], int]


def _print(args: argparse.Namespace, body: Any, text: Callable[[Any], str]) -> int:
    print(json.dumps(body, indent=2) if getattr(args, "json", False) else text(body))
    return EXIT_OK


def _confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question} -- refusing without a terminal; pass --yes", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    return _print(args, client.get("/v1/status"), render.status)


def cmd_history(args: argparse.Namespace, client: Client) -> int:
    query = f"?limit={args.limit}" + (f"&service={args.service}" if args.service else "")
    body = client.get(f"/v1/incidents{query}")
    return _print(args, body, lambda b: render.history(b["incidents"]))


def cmd_show(args: argparse.Namespace, client: Client) -> int:
    return _print(args, client.get(f"/v1/incidents/{args.incident}"), render.incident)


def cmd_trigger(args: argparse.Namespace, client: Client) -> int:
    what = "a DRY RUN of a rollback" if args.dry_run else "a ROLLBACK"
    target = f" to {args.to_release}" if args.to_release else " to the last green release"
    if not _confirm(f"Start {what} of {args.service or 'the service'}{target}?", args.yes or args.dry_run):
        return EXIT_ERROR
    body = client.post(
        "/v1/trigger",
        {"service": args.service, "reason": args.reason, "dry_run": args.dry_run, "to_release": args.to_release},
    )
    print(f"incident {body['id']} opened ({body['state']}); follow it with: rollbackd show {body['id']}")
    return EXIT_OK


def cmd_abort(args: argparse.Namespace, client: Client) -> int:
    body = client.post(f"/v1/incidents/{args.incident}/abort", {"reason": args.reason})
    print(f"incident {body['id']}: {body['state']}; abort requested (its running step is stopped, processes killed)")
    return EXIT_OK


def cmd_pause(args: argparse.Namespace, client: Client) -> int:
    body = client.post("/v1/pause", {"service": args.service, "reason": args.reason, "for": args.for_})
    until = body["paused"]["until"] or "`rollbackd resume`"
    print(f"paused {body['service']}: automatic actions frozen until {until}")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace, client: Client) -> int:
    body = client.post("/v1/resume", {"service": args.service, "reason": args.reason, "all": args.all})
    lifted = ", ".join(f"{name} ({n})" for name, n in body.get("by_service", {}).items())
    print(f"resumed {body['service']}: {body['cleared']} pause/hold cleared" + (f" [{lifted}]" if lifted else ""))
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from rollbackd import redact
    from rollbackd.errors import ConfigError
    from rollbackd.wiring import load_settings as load

    try:
        settings = load(args.file)
    except ConfigError as exc:
        print(f"{args.file}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {redact.text(problem, 2000)}", file=sys.stderr)  # a problem may quote a secret's value
        return EXIT_ERROR
    print(f"{args.file}: ok ({len(settings.services)} service(s): {', '.join(sorted(settings.services))})")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from rollbackd.daemon import serve
    from rollbackd.errors import ConfigError, StateError
    from rollbackd.wiring import load_settings as load

    try:
        settings = load(args.config)
        asyncio.run(serve(settings, listen=args.listen))
    except ConfigError as exc:
        print(f"{args.config}: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_ERROR
    except StateError as exc:
        print(f"cannot open the state store: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"cannot listen on {args.listen or settings.listen}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="daemon URL (env ROLLBACKD_URL; default http://127.0.0.1:8085)")
    p.add_argument("--token", help="API token (env ROLLBACKD_API_TOKEN)")
    p.add_argument("--config", help="read URL and token from this config file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollbackd", description="Alerts in, verified rollbacks of data and code out."
    )
    parser.add_argument("--version", action="version", version=f"rollbackd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the daemon")
    p.add_argument("--config", required=True, help="config file (YAML)")
    p.add_argument("--listen", help="HOST:PORT, overrides `listen:`")
    p.set_defaults(local=cmd_serve)

    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("file")
    p.set_defaults(local=cmd_check_config)

    def remote(name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        _client_flags(sp)
        sp.set_defaults(remote=fn)
        return sp

    p = remote("status", cmd_status, "mode, pauses, active incident, budget, last decisions")
    p.add_argument("--json", action="store_true")
    p = remote("history", cmd_history, "recent incidents")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--service")
    p.add_argument("--json", action="store_true")
    p = remote("show", cmd_show, "one incident: steps, durations, journal")
    p.add_argument("incident")
    p.add_argument("--json", action="store_true")
    p = remote("trigger", cmd_trigger, "start a rollback by hand (asks first)")
    p.add_argument("--reason", required=True)
    p.add_argument("--service")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--to-release", help="a release version instead of the last green one")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p = remote("abort", cmd_abort, "stop an incident: its running step is stopped")
    p.add_argument("incident")
    p.add_argument("--reason", default="aborted from the CLI")
    p = remote("pause", cmd_pause, "freeze automatic actions (a service, or all)")
    p.add_argument("--reason", required=True)
    p.add_argument("--for", dest="for_", help="e.g. 2h; default: until resume")
    p.add_argument("--service")
    p = remote("resume", cmd_resume, "lift a pause and a hold (the only service, or --service, or --all)")
    p.add_argument("--reason", default="resumed from the CLI")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--service")
    which.add_argument("--all", action="store_true", help="every service and the global pause")
    for module_name in CLI_MODULES:
        importlib.import_module(module_name).register(sub, remote)
    return parser


# Commands of the capabilities; each module has register(subparsers, remote) and imports only the stdlib.
CLI_MODULES = (
    "rollbackd.cli.snapshot",
    "rollbackd.cli.release",
    "rollbackd.cli.verify",
    "rollbackd.cli.drill",
    "rollbackd.cli.doctor",
    "rollbackd.cli.rollout",
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_USAGE
    if hasattr(args, "local"):
        result: int = args.local(args)
        return result
    try:
        from rollbackd.cli.client import from_args

        client = from_args(args.url, args.token, args.config)
        code: int = args.remote(args, client)
        return code
    except Unreachable as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiError as exc:
        field = f" [{exc.body['field']}]" if exc.body.get("field") else ""
        print(f"error {exc.status}{field}: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.status == 400 else EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
