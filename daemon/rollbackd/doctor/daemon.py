"""The daemon, through its own API: reachable with the API token, releases live and green known,
snapshots fresh and verified per store, the last drill's age."""

from __future__ import annotations

import re
import time
from typing import Any

from rollbackd.doctor import Finding, fail, ok, skip, warn
from rollbackd.doctor.context import Context
from rollbackd.doctor.contract import DRILL_METRIC, DRILL_STALE_S, SNAPSHOT_METRIC, SNAPSHOT_STALE_S
from rollbackd.durations import format_duration

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


async def check_daemon(ctx: Context) -> list[Finding]:
    try:
        status = await ctx.daemon_status()
    except Exception as exc:
        ctx.down["rollbackd"] = str(exc)
        raise
    return [
        ok(
            "rollbackd",
            f"rollbackd answers at {ctx.daemon_url} (mode {status.get('mode')}, "
            f"{len(status.get('services') or {})} service(s))",
        )
    ]


async def check_releases(ctx: Context) -> list[Finding]:
    findings = []
    for name, svc in ctx.settings.services.items():
        if not svc.releases.track:
            findings.append(
                warn(
                    "releases",
                    "releases.track is false: no release history, no baseline, a rollback cannot choose a target",
                    f"set services.{name}.releases.track: true",
                    name,
                )
            )
            continue
        findings.append(_release_finding(name, await ctx.service_status(name)))
    return findings


def _release_finding(service: str, status: dict[str, Any]) -> Finding:
    live, green = status.get("live_release"), status.get("last_green")
    if live is None:
        return fail(
            "releases",
            "no live release recorded: nothing is known to roll back from or to",
            f"rollbackd release record V --service {service} --image IMAGE --digest sha256:... "
            "(your deploy pipeline should do it on every deploy)",
            service,
        )
    if green is None:
        return fail(
            "releases",
            f"live {live}, but no release is green: a rollback has no target and no baseline is exported",
            f'rollbackd release mark-green {live} --service {service} --reason "known good"',
            service,
        )
    target = status.get("rollback_target") or {}
    no_target = (status.get("no_target") or {}).get("detail")
    then = f"rollback target {target['version']}" if target.get("version") else f"no rollback target yet ({no_target})"
    return ok("releases", f"live {live}, last green {green}; {then}", service)


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The labelled samples of a Prometheus text exposition (enough for rollbackd's own gauges)."""
    out = []
    for line in text.splitlines():
        found = _SAMPLE.match(line.strip())
        if found:
            name, labels, value = found.groups()
            out.append((name, dict(_LABEL.findall(labels)), float(value)))
    return out


async def _own_metrics(ctx: Context) -> list[tuple[str, dict[str, str], float]]:
    async def fetch() -> Any:
        status, body = await ctx.request("rollbackd", "GET", ctx.daemon_url + "/metrics")
        return parse_metrics(body if status == 200 and isinstance(body, str) else "")

    samples: list[tuple[str, dict[str, str], float]] = await ctx.cached("metrics", fetch)
    return samples


async def check_snapshots(ctx: Context) -> list[Finding]:
    ctx.need("rollbackd")
    samples = await _own_metrics(ctx)
    findings = []
    for name in ctx.settings.services:
        snaps = (await ctx.service_status(name)).get("snapshots")
        if snaps is None:
            findings.append(skip("snapshots", "no snapshots configured (a code-only service)", name))
            continue
        stores = {s["store"]: v for m, s, v in samples if m == SNAPSHOT_METRIC and s.get("service") == name}
        findings.append(_snapshot_finding(name, snaps, stores, time.time()))
    return findings


def _snapshot_finding(service: str, snaps: dict[str, Any], stores: dict[str, float], now: float) -> Finding:
    latest = snaps.get("latest")
    create = f'rollbackd snapshot create --service {service} --reason "first snapshot"'
    if not latest:
        return fail("snapshots", "no snapshot set yet: a data rollback has nothing to restore", create, service)
    never = sorted(s for s, at in stores.items() if at <= 0)
    stale = sorted(
        f"{s} {format_duration(now - at)} old" for s, at in stores.items() if at > 0 and now - at > SNAPSHOT_STALE_S
    )
    ages = ", ".join(f"{s} {format_duration(now - at)} ago" for s, at in sorted(stores.items()) if at > 0)
    if never or stale:
        what = "; ".join(([f"never snapshotted since start: {', '.join(never)}"] if never else []) + stale)
        return warn(
            "snapshots",
            f"latest set {latest['id']}; {what}",
            f"{create}, and give snapshots a schedule (services.{service}.snapshots.schedule)",
            service,
        )
    if not latest.get("verified"):
        return warn(
            "snapshots",
            f"latest set {latest['id']} is not verified",
            f"rollbackd snapshot verify {latest['id']} --service {service}",
            service,
        )
    return ok(
        "snapshots", f"{snaps.get('count')} set(s), latest {latest['id']} verified ({ages or 'age unknown'})", service
    )


async def check_drill(ctx: Context) -> list[Finding]:
    ctx.need("rollbackd")
    samples = await _own_metrics(ctx)
    findings = []
    for name in ctx.settings.services:
        drill = (await ctx.service_status(name)).get("drill")
        if drill is None:
            findings.append(skip("drill", "no drill configured (RollbackdDrillStale stays silent)", name))
            continue
        last_go = next((v for m, s, v in samples if m == DRILL_METRIC and s.get("service") == name), 0.0)
        findings.append(_drill_finding(name, drill, last_go, time.time()))
    return findings


def _drill_finding(service: str, drill: dict[str, Any], last_go: float, now: float) -> Finding:
    run = f"rollbackd drill --service {service}"
    last = drill.get("last") or {}
    if last_go <= 0:
        tried = f" (last one: {last.get('verdict')}, {last.get('reason')})" if last else ""
        return warn(
            "drill", f"no successful drill yet{tried}: nobody knows whether the snapshots restore", run, service
        )
    age = now - last_go
    scheduled = "scheduled" if drill.get("schedule") else "not scheduled"
    if age > DRILL_STALE_S:
        return warn("drill", f"last successful drill {format_duration(age)} ago ({scheduled})", run, service)
    return ok("drill", f"last successful drill {format_duration(age)} ago ({scheduled})", service)
