"""`rollbackd snapshot create|list|verify|restore|prune|adopt-alias`: the daemon's /v1/snapshots API.

Only the standard library at module level (`rollbackd --help` must start instantly). A restore first asks
the daemon what it would replace (a dry run), shows it, and asks before acting unless --yes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rollbackd.cli.follow import follow

LONG = 6 * 3600.0  # snapshots and restores of big databases take minutes; the client must wait for them


def _svc(args: argparse.Namespace) -> dict[str, Any]:
    return {"service": args.service} if getattr(args, "service", None) else {}


def _out(args: argparse.Namespace, body: Any, text: str) -> int:
    print(json.dumps(body, indent=2) if getattr(args, "json", False) else text)
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _counts(manifests: dict[str, Any]) -> str:
    parts = []
    for name, m in manifests.items():
        if "tables" in m:
            parts.append(f"{name}: {len(m['tables'])} tables, {sum(t['rows'] for t in m['tables'].values())} rows")
        elif "collections" in m:
            parts.append(f"{name}: " + ", ".join(f"{a} {c['points']} points" for a, c in m["collections"].items()))
    return "; ".join(parts)


def cmd_list(args: argparse.Namespace, client: Any) -> int:
    query = f"?service={args.service}" if args.service else ""
    body = client.get(f"/v1/snapshots{query}")
    rows = [
        f"{s['id']:<20} {_when(s['created_at'])}  release {s.get('release') or '-':<12} "
        f"{'verified' if s['verified'] else 'UNVERIFIED':<10} {s.get('kind', ''):<9} "
        f"{_size(s.get('size_bytes')):>9}  "
        f"{_counts(s['manifests'])}  ({s.get('reason') or ''})"
        for s in body["snapshots"]
    ]
    kept = [
        f"kept copy {store}: {k['name']}" for store, copies in (body.get("kept_copies") or {}).items() for k in copies
    ]
    return _out(args, body, "\n".join(rows + kept) if rows or kept else f"no snapshots of {body['service']}")


def cmd_create(args: argparse.Namespace, client: Any) -> int:
    job = client.post("/v1/snapshots", {**_svc(args), "reason": args.reason, "background": True})
    if "state" in job:  # a job to follow (a daemon without jobs answers the set itself)
        query = f"?service={job['service']}"
        job = follow(client, f"/v1/snapshots/jobs/{job['id']}{query}", lambda b: b["state"] != "running")
        if job["state"] != "done":
            print(f"snapshot {job['state']}: {job.get('error') or 'the daemon stopped while it ran'}", file=sys.stderr)
            return 1
        job = job["result"]
    return _out(
        args, job, f"snapshot set {job['id']} created ({_size(job.get('size_bytes'))}): {_counts(job['manifests'])}"
    )


def cmd_verify(args: argparse.Namespace, client: Any) -> int:
    client.timeout = max(client.timeout, LONG)
    body = client.post(f"/v1/snapshots/{args.id}/verify", _svc(args))
    text = (
        f"{args.id}: ok ({body.get('files')} files re-hashed)"
        if body["verified"]
        else f"{args.id}: CORRUPT: {body.get('error')}"
    )
    _out(args, body, text)
    return 0 if body["verified"] else 1


def describe_plan(plan: dict[str, Any]) -> str:
    snap = plan["snapshot"]
    out = [
        f"restore snapshot {snap['id']} of {plan['service']} (taken {_when(snap['created_at'])}, "
        f"release {snap.get('release') or '-'}); this REPLACES:"
    ]
    for name, what in plan["replaces"].items():
        if "database" in what:
            sv = what["schema_version"]
            out.append(
                f"  {name}: database {what['database']} ({_size(what['bytes'])}), schema version "
                f"{sv['live']} -> {sv['snapshot']}"
            )
            out += [f"    {t}: {c['live']} rows -> {c['snapshot']}" for t, c in what["tables"].items()]
        else:
            p = what["points"]
            out.append(
                f"  {name}: alias {what['alias']} -> {what['collection']}: {p['live']} points -> {p['snapshot']}"
            )
    out.append("steps: " + "; ".join(plan["steps"]))
    return "\n".join(out)


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} -- refusing without a terminal; pass --yes", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_restore(args: argparse.Namespace, client: Any) -> int:
    path = f"/v1/snapshots/{args.id}/restore"
    plan = client.post(path, {**_svc(args), "reason": args.reason, "dry_run": True})
    print(json.dumps(plan, indent=2) if args.json and args.dry_run else describe_plan(plan))
    if args.dry_run:
        return 0
    if not args.yes and not _ask("Restore this snapshot now?"):
        return 1
    force = {"allow_foreign": args.allow_foreign} if args.allow_foreign else {}
    opened = client.post(path, {**_svc(args), "reason": args.reason, "dry_run": False, **force})
    print(f"restore of {opened['snapshot_set']} runs as incident {opened['incident']}; following it")
    seen: set[str] = set()

    def progress(body: dict[str, Any]) -> None:
        for step in body.get("steps", []):
            if step["state"] in ("done", "failed") and step["name"] not in seen:
                seen.add(step["name"])
                print(f"  {step['name']}: {step['state']} ({step.get('duration_s') or 0:.1f}s)")

    done = follow(client, opened["follow"], lambda b: b["state"] not in ("pending", "running"), on_update=progress)
    _out(args, done, describe_restore(done))
    return 0 if done["state"] == "resolved" else 1


def describe_restore(incident: dict[str, Any]) -> str:
    """The outcome of a restore incident: safety set, downtime, what was kept, properties changed, the undo."""
    outputs = {s["name"]: s.get("output") or {} for s in incident.get("steps", [])}
    if incident["state"] != "resolved":
        return f"restore incident {incident['id']} {incident['state']}: {incident.get('error') or '-'}"
    swap = outputs.get("data.swap", {})
    downtime = ", ".join(f"{n} {d}s" for n, d in (swap.get("downtime_s") or {}).items())
    kept = ", ".join(f"{n}: {s.get('kept')}" for n, s in (swap.get("swapped") or {}).items())
    changed = [
        f"{n} {prop}: {c['live']} -> {c['snapshot']}"
        for n, props in (swap.get("properties_changed") or {}).items()
        for prop, c in props.items()
    ]
    lines = [
        f"restored {swap.get('snapshot_set')} (incident {incident['id']}, downtime {downtime}); safety "
        f"snapshot {outputs.get('snapshot.safety', {}).get('snapshot_set') or 'none'}; replaced data kept as "
        f"{kept}; undo with `rollbackd rollforward {incident['id']}`"
    ]
    if changed:
        lines += ["database properties changed (live -> snapshot):", *(f"  {c}" for c in changed)]
    return "\n".join(lines)


def cmd_prune(args: argparse.Namespace, client: Any) -> int:
    body = client.post("/v1/snapshots/prune", {**_svc(args), "reason": args.reason, "dry_run": args.dry_run})
    verb = "would delete" if args.dry_run else "deleted"
    lines = [f"{verb} {len(body['deleted'])}: {', '.join(body['deleted']) or '-'}"]
    lines += [f"kept {k['id']}: {k['why']}" for k in body["kept"]]
    if body.get("orphan_copies_dropped"):
        lines.append(f"{verb} leftover restore copies: {', '.join(body['orphan_copies_dropped'])}")
    if body.get("kept_copies_dropped"):
        lines.append(f"{verb} old kept copies: {', '.join(body['kept_copies_dropped'])}")
    return _out(args, body, "\n".join(lines))


def cmd_adopt(args: argparse.Namespace, client: Any) -> int:
    print(
        "adopting an alias: the collection is copied, dropped and replaced by an alias of the same name; "
        "reads of that name FAIL during the switch (usually well under a second)"
    )
    if not args.yes and not _ask("Go on?"):
        return 1
    client.timeout = max(client.timeout, LONG)
    body = client.post(
        "/v1/snapshots/adopt-alias",
        {**_svc(args), "reason": args.reason, **({"store": args.store} if args.store else {})},
    )
    text = (
        f"alias {body['alias']} -> {body['collection']} ({body['points']} points); window {body['window_s']}s"
        if body.get("adopted")
        else body.get("detail", "")
    )
    return _out(args, body, text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", default=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    p.add_argument("--url", default=argparse.SUPPRESS, help="daemon URL (env ROLLBACKD_URL)")
    p.add_argument("--token", default=argparse.SUPPRESS, help="API token (env ROLLBACKD_API_TOKEN)")
    p.add_argument("--config", default=argparse.SUPPRESS, help="read URL and token from this config file")


def dispatch(args: argparse.Namespace, client: Any) -> int:
    fn = getattr(args, "snapshot_fn", None)
    if fn is None:
        print("usage: rollbackd snapshot {create,list,verify,restore,prune,adopt-alias} ...", file=sys.stderr)
        return 2
    code: int = fn(args, client)
    return code


def register(sub: Any, remote: Any) -> None:
    parser = remote("snapshot", dispatch, "data snapshots: create, list, verify, restore, prune, adopt-alias")
    parser.add_argument("--service")
    parser.add_argument("--json", action="store_true")
    cmds = parser.add_subparsers(dest="snapshot_command", metavar="SUBCOMMAND")

    def add(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = cmds.add_parser(name, help=help_)
        _common(p)
        p.set_defaults(snapshot_fn=fn)
        return p

    add("list", cmd_list, "snapshot sets, newest first")
    p = add("create", cmd_create, "snapshot every store now")
    p.add_argument("--reason", default="manual snapshot")
    p = add("verify", cmd_verify, "re-hash a set's files against its manifest")
    p.add_argument("id")
    p = add("restore", cmd_restore, "restore a set (shows what it replaces, asks first)")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    p.add_argument("--dry-run", action="store_true", help="only show what would be replaced")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.add_argument(
        "--allow-foreign",
        metavar="SERVICE",
        help="restore a set taken of another service, database or server (name that service)",
    )
    p = add("prune", cmd_prune, "apply retention now")
    p.add_argument("--reason", default="manual prune")
    p.add_argument("--dry-run", action="store_true")
    p = add("adopt-alias", cmd_adopt, "put a Qdrant collection behind an alias of its own name")
    p.add_argument("--reason", required=True)
    p.add_argument("--store", help="the qdrant store (when there are several)")
    p.add_argument("--yes", action="store_true")
