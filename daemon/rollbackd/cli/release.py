"""CLI commands of the code capability: `release record|mark-green|diff|list`, `traffic get|set`,
`rollforward ID`. Standard library only (the CLI must start instantly)."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from rollbackd.cli import render
from rollbackd.cli.client import EXIT_OK, Client


def _query(**params: Any) -> str:
    pairs = {k: v for k, v in params.items() if v is not None}
    return f"?{urllib.parse.urlencode(pairs)}" if pairs else ""


def _num(value: Any) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _rows(body: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in body["releases"]:
        snaps = ", ".join(s["id"] + ("" if s["verified"] else " (unverified)") for s in r["snapshots"]) or "-"
        green = f"yes ({r['green_by']}: {r['green_reason']})" if r["green"] else "no"
        rows.append(
            [
                r["version"],
                r["status"],
                green,
                _num(r["baseline_p95_s"]),
                r["schema_version"] or "-",
                (r["digest"] or "-")[:19],
                r["source"],
                r["live_at"] or "-",
                snaps,
            ]
        )
    return rows


HEADERS = ["release", "status", "green", "baseline P95", "schema", "digest", "source", "live at", "snapshots"]


def markdown(body: dict[str, Any]) -> str:
    """The compatibility matrix as a Markdown table, to paste into a postmortem."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        f"Releases of `{body['service']}` (live: {body['live'] or '-'}, last green: {body['last_green'] or '-'})",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in _rows(body)]
    return "\n".join(lines)


def text(body: dict[str, Any]) -> str:
    head = f"service {body['service']}: live {body['live'] or '-'}, last green {body['last_green'] or '-'}"
    rows = _rows(body)
    return head + "\n" + (render.table(HEADERS, rows) if rows else "no releases recorded")


def release_version(text: str) -> str:
    """argparse type: a release version of the documented character set (rollbackd.releases)."""
    from rollbackd.releases import version_problem

    problem = version_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    body = client.get("/v1/releases" + _query(service=args.service, limit=args.limit))
    if args.json:
        import json

        print(json.dumps(body, indent=2))
    else:
        print(markdown(body) if args.markdown else text(body))
    return EXIT_OK


def cmd_record(args: argparse.Namespace, client: Client) -> int:
    body = client.post(
        "/v1/releases",
        {
            "service": args.service,
            "version": args.version,
            "image": args.image,
            "digest": args.digest,
            "config_digest": args.config_digest,
            "schema_version": args.schema_version,
            "source": args.source,
            "reason": args.reason,
        },
    )
    print(f"release {body['version']} recorded (digest {body['digest']}, {body['status']})")
    return EXIT_OK


def cmd_green(args: argparse.Namespace, client: Client) -> int:
    path = f"/v1/releases/{urllib.parse.quote(args.version, safe='')}/green"
    body = client.post(path, {"service": args.service, "reason": args.reason})
    print(f"release {body['version']} is green (baseline P95 {_num(body['baseline_p95_s'])})")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, client: Client) -> int:
    body = client.get("/v1/releases/diff" + _query(service=args.service, **{"from": args.a, "to": args.b}))
    print(f"{body['service']}: from {body['from']} to {body['to']}")
    print("\n".join(f"  {line}" for line in body["changes"]))
    return EXIT_OK


def cmd_traffic_get(args: argparse.Namespace, client: Client) -> int:
    body = client.get("/v1/traffic" + _query(service=args.service))
    print(f"{body['service']}: weight {body['weight']} ({body['switch']} switch)")
    return EXIT_OK


def cmd_traffic_set(args: argparse.Namespace, client: Client) -> int:
    body = client.post("/v1/traffic", {"service": args.service, "weight": args.weight, "reason": args.reason})
    print(f"{body['service']}: weight {body['previous']} -> {body['weight']} ({body['switch']} switch)")
    return EXIT_OK


def cmd_rollforward(args: argparse.Namespace, client: Client) -> int:
    body = client.post(
        f"/v1/incidents/{urllib.parse.quote(args.incident, safe='')}/rollforward", {"reason": args.reason}
    )
    print(f"incident {body['id']} opened to roll forward {args.incident}; follow it: rollbackd show {body['id']}")
    return EXIT_OK


def register(sub: Any, remote: Any) -> None:
    rel = sub.add_parser("release", help="the release registry: record, mark green, list")
    rsub = rel.add_subparsers(dest="release_command", metavar="ACTION", required=True)

    def action(parent: Any, name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_)
        for flag, helptext in (
            ("--url", "daemon URL (env ROLLBACKD_URL)"),
            ("--token", "API token"),
            ("--config", "read URL and token from this config file"),
        ):
            p.add_argument(flag, help=helptext)
        p.add_argument("--service")
        p.set_defaults(remote=fn)
        return p

    p = action(rsub, "record", cmd_record, "record a deployed release (the pipeline calls this)")
    p.add_argument(
        "version",
        type=release_version,
        help="letters, digits and . _ + - : @ (1-128, starting with a letter or digit, no '..')",
    )
    p.add_argument("--image", help="image reference; its digest is resolved if --digest is not given")
    p.add_argument("--digest", help="image digest / id (sha256:...) or artefact id")
    p.add_argument("--config-digest")
    p.add_argument("--schema-version", help="the data schema version this release needs")
    p.add_argument("--source", choices=["pipeline", "manual"], default="manual")
    p.add_argument("--reason", default="recorded from the CLI")
    p = action(rsub, "mark-green", cmd_green, "mark a release green (known good; measures its baseline)")
    p.add_argument("version", type=release_version)
    p.add_argument("--reason", required=True)
    p = action(rsub, "diff", cmd_diff, "what changes from release A to release B (the rollback's direction)")
    p.add_argument("a", type=release_version, metavar="A")
    p.add_argument("b", type=release_version, metavar="B")
    p = action(rsub, "list", cmd_list, "releases with green marks, baselines and snapshots")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--markdown", action="store_true", help="a Markdown table for a postmortem")
    p.add_argument("--json", action="store_true")

    tr = sub.add_parser("traffic", help="the traffic switch of the guarded version")
    tsub = tr.add_subparsers(dest="traffic_command", metavar="ACTION", required=True)
    action(tsub, "get", cmd_traffic_get, "show the weight")
    p = action(tsub, "set", cmd_traffic_set, "set the weight (0 cuts traffic off the guarded version)")
    p.add_argument("weight", type=int, choices=range(0, 101), metavar="N")
    p.add_argument("--reason", default="set from the CLI")

    p = remote("rollforward", cmd_rollforward, "undo a rollback from the kept data copies and container")
    p.add_argument("incident")
    p.add_argument("--reason", default="roll forward from the CLI")
