"""`rollbackd rollout start|status|promote|hold|resume|abort`: a progressive rollout of a release
(rollbackd.rollout). Without an id, the service's running rollout. Standard library only."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

from rollbackd.cli.client import EXIT_OK, Client
from rollbackd.cli.release import release_version
from rollbackd.rollout.table import render


def _current(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    pairs = {k: v for k, v in (("id", getattr(args, "id", None)), ("service", args.service)) if v}
    return client.get("/v1/rollouts/current" + (f"?{urllib.parse.urlencode(pairs)}" if pairs else ""))


def text(body: dict[str, Any]) -> str:
    phases = (body.get("rollout") or {}).get("phases") or {}
    weight = phases[max(phases, key=int)].get("weight") if phases else 0  # the phase reached last
    head = f"rollout {body['id']}  service {body['service']}  state {body['state'].upper()}  phase weight {weight} %"
    return head + "\n" + render(body.get("rollout") or {})


def cmd_start(args: argparse.Namespace, client: Client) -> int:
    body = client.post(
        "/v1/rollouts",
        {
            "service": args.service,
            "version": args.version,
            "image": args.image,
            "digest": args.digest,
            "schema_version": args.schema_version,
            "reason": args.reason,
        },
    )
    print(f"rollout {body['id']} of {args.version} started: `rollbackd rollout status` follows it")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    body = _current(args, client)
    print(json.dumps(body, indent=2) if args.json else text(body))
    return EXIT_OK


def _act(action: str) -> Any:
    def run(args: argparse.Namespace, client: Client) -> int:
        rollout_id = args.id or _current(args, client)["id"]
        body = client.post(f"/v1/rollouts/{urllib.parse.quote(rollout_id)}/{action}", {"reason": args.reason})
        print(f"rollout {rollout_id}: {action} journaled (state {body['state']})")
        return EXIT_OK

    return run


_ACTIONS = {
    "promote": "skip the rest of this phase's window (a hard gate failing still rolls back)",
    "hold": "stay at this weight until `rollout resume` or `rollout promote`",
    "resume": "lift a hold",
    "abort": "the kill switch: the new release's weight goes to 0 now, the rollout stops, its canary is removed",
}


def register(sub: Any, remote: Any) -> None:
    top = sub.add_parser("rollout", help="progressive rollout of a release: 1 -> 10 -> 50 -> 100 %%")
    rsub = top.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)

    def action(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = rsub.add_parser(name, help=help_)
        for flag, helptext in (
            ("--url", "daemon URL (env ROLLBACKD_URL)"),
            ("--token", "API token"),
            ("--config", "read URL and token from this config file"),
        ):
            p.add_argument(flag, help=helptext)
        p.add_argument("--service")
        p.set_defaults(remote=fn)
        return p

    p = action("start", cmd_start, "deploy VERSION beside the live release and start its phases")
    p.add_argument("version", type=release_version)
    p.add_argument("--image")
    p.add_argument("--digest")
    p.add_argument("--schema-version")
    p.add_argument("--reason", default="rollout from the CLI")
    p = action("status", cmd_status, "the rollout: each phase, each gate against its limit, the decision")
    p.add_argument("--id")
    p.add_argument("--json", action="store_true")
    for name, help_ in _ACTIONS.items():
        p = action(name, _act(name), help_)
        p.add_argument("id", nargs="?", help="the rollout (default: the service's running one)")
        p.add_argument("--reason", default=f"{name} from the CLI")
