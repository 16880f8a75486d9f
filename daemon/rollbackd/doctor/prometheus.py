"""Prometheus: reachable, the guarded services' series carry the service label, the rules are
loaded and healthy, the latency baseline exists, and rollbackd itself is scraped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from rollbackd.config import split_listen
from rollbackd.doctor import Finding, fail, ok, skip, warn
from rollbackd.doctor.context import Context
from rollbackd.doctor.contract import (
    BASELINE_ALERT,
    BASELINE_METRIC,
    RAG_ALERTS,
    RAG_METRIC_PREFIX,
    ROLLBACKD_ALERTS,
    ROLLBACKD_JOB,
)
from rollbackd.prom import promql_string, selector

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_RULE_FILES = "rules/rag.rules.yml and rules/rollbackd.rules.yml"


async def check_prometheus(ctx: Context) -> list[Finding]:
    cfg = ctx.settings.prometheus
    if cfg is None:
        ctx.down["prometheus"] = "prometheus.url is not set"
        return [
            fail(
                "prometheus",
                "prometheus.url is not set: no alert can be confirmed, no baseline measured",
                "set prometheus.url in the config (README: Connect your Prometheus and Alertmanager)",
            )
        ]
    try:
        info = await ctx.prom("status/buildinfo")
    except Exception as exc:
        ctx.down["prometheus"] = str(exc)
        raise
    return [ok("prometheus", f"Prometheus {info.get('version', '?')} answers at {cfg.url}")]


def _jobs(result: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({str((r.get("metric") or {}).get("job", "?")) for r in result})


async def check_series(ctx: Context) -> list[Finding]:
    label = ctx.settings.service_label
    findings = []
    for service in ctx.settings.services:
        findings.append(await _series_of(ctx, label, service))
    return findings


async def _series_of(ctx: Context, label: str, service: str) -> Finding:
    name = f'__name__=~"{RAG_METRIC_PREFIX}.+"'
    with_label = await ctx.query(f"count by (job) ({{{name},{label}={promql_string(service)}}})")
    if with_label:
        count = sum(int(float(r["value"][1])) for r in with_label)
        return ok(
            "series",
            f'{count} {RAG_METRIC_PREFIX}* series carry {label}="{service}" (job {", ".join(_jobs(with_label))})',
            service,
        )
    without = _jobs(await ctx.query(f'count by (job) ({{{name},{label}=""}})'))
    if without:
        jobs = ", ".join(repr(j) for j in without)
        return fail(
            "series",
            f"{RAG_METRIC_PREFIX}* series of scrape job {jobs} have no `{label}` label: every "
            "RAG rule aggregates by it, so their alerts reach rollbackd without a service and are ignored "
            "(unknown_service)",
            f"in prometheus.yml, give job {jobs} the target label `{label}: {service}` (static_configs "
            f"labels, or a relabel rule) and reload Prometheus",
            service,
        )
    others = await ctx.query(f'count by ({label}) ({{{name},{label}!=""}})')
    seen = sorted({str(r["metric"].get(label)) for r in others})
    hint = f" (series exist for {label}={', '.join(seen)}: a typo in the config or in prometheus.yml?)" if seen else ""
    return fail(
        "series",
        f'no {RAG_METRIC_PREFIX}* series with {label}="{service}" in Prometheus{hint}',
        f"scrape the RAG service with the target label `{label}: {service}` (config/prometheus.example.yml, job rag)",
        service,
    )


async def check_rules(ctx: Context) -> list[Finding]:
    groups = await ctx.rule_groups()
    rules = {r["name"]: r for g in groups for r in g.get("rules", []) if r.get("type") == "alerting"}
    rollback = {
        a
        for svc in ctx.settings.services.values()
        for a in svc.policy.rollback_alerts
        if not any(c in a for c in "*?[")
    }
    required = sorted(rollback | set(ROLLBACKD_ALERTS))
    missing = [a for a in required if a not in rules]
    broken = sorted(f"{n} ({r.get('lastError')})" for n, r in rules.items() if r.get("health") == "err")
    if missing or broken:
        parts = ([f"missing: {', '.join(missing)}"] if missing else []) + (
            [f"failing to evaluate: {'; '.join(broken)}"] if broken else []
        )
        return [
            fail(
                "rules",
                "; ".join(parts),
                f"list {_RULE_FILES} under rule_files in prometheus.yml and reload Prometheus "
                "(promtool check rules shows errors)",
            )
        ]
    optional = [a for a in RAG_ALERTS if a not in rules]
    if optional:
        return [
            warn(
                "rules",
                f"{len(required)} needed rules loaded; RAG alerts missing: {', '.join(optional)}",
                "load rules/rag.rules.yml unchanged: the missing alerts only notify, but nobody hears of them",
            )
        ]
    return [
        ok(
            "rules",
            f"{len(rules)} alert rules loaded, healthy: every rollback alert of the policy and "
            f"rollbackd's own {len(ROLLBACKD_ALERTS)}",
        )
    ]


async def check_baseline(ctx: Context) -> list[Finding]:
    findings = []
    for name, svc in ctx.settings.services.items():
        if BASELINE_ALERT not in svc.policy.rollback_alerts:
            findings.append(skip("baseline", f"{BASELINE_ALERT} is not a rollback alert of {name}", name))
        elif not svc.releases.track:
            findings.append(
                fail(
                    "baseline",
                    f"releases.track is false: no release is ever green, no baseline is exported, so "
                    f"{BASELINE_ALERT} can never fire",
                    f"set services.{name}.releases.track: true, record the live release and mark it green "
                    "(README: Connect your Prometheus and Alertmanager, step 3)",
                    name,
                )
            )
        else:
            findings.append(await _baseline_of(ctx, name))
    return findings


async def _baseline_of(ctx: Context, service: str) -> Finding:
    sel = selector(BASELINE_METRIC, {ctx.settings.service_label: service})
    found = await ctx.query(sel)
    if found:
        return ok(
            "baseline",
            f"{BASELINE_METRIC} = {float(found[0]['value'][1]):.3f}s: {BASELINE_ALERT} compares against it",
            service,
        )
    return fail(
        "baseline",
        f"Prometheus has no {sel}: {BASELINE_ALERT} cannot fire",
        f"mark the live release green while it serves traffic (rollbackd release mark-green V --service "
        f"{service} --reason ...), and have Prometheus scrape rollbackd",
        service,
    )


def _same_endpoint(scrape_url: str, host: str, port: int) -> bool:
    parts = urlsplit(scrape_url)
    if parts.port != port or parts.path.rstrip("/") != "/metrics":
        return False
    wildcard = host in ("0.0.0.0", "::", "")
    return wildcard or parts.hostname == host or {parts.hostname, host} <= _LOOPBACK


async def check_scraped(ctx: Context) -> list[Finding]:
    host, port = split_listen(ctx.settings.listen)
    mine = [t for t in await ctx.targets() if _same_endpoint(str(t.get("scrapeUrl", "")), host, port)]
    where = f"{ctx.daemon_url}/metrics"
    if not mine:
        return [
            fail(
                "scraped",
                f"no Prometheus target scrapes rollbackd at {where}: RollbackdDown cannot see it "
                f"and {BASELINE_METRIC} never reaches Prometheus",
                f"add a scrape job `{ROLLBACKD_JOB}` with target {host}:{port} "
                "(config/prometheus.example.yml) and reload Prometheus",
            )
        ]
    target = mine[0]
    labels = target.get("labels") or {}
    job, health = labels.get("job"), target.get("health")
    if job != ROLLBACKD_JOB:
        return [
            fail(
                "scraped",
                f'rollbackd is scraped as job {job!r}, but RollbackdDown queries up{{job="{ROLLBACKD_JOB}"}}',
                f"rename the scrape job to {ROLLBACKD_JOB}",
            )
        ]
    label = ctx.settings.service_label
    if label in labels:
        return [
            fail(
                "scraped",
                f"job {job} sets the target label {label}={labels[label]!r}: rollbackd's own "
                f"series then lose their {label} label (it becomes exported_{label})",
                f"remove the `{label}` label from the {job} job: rollbackd's series name their service",
            )
        ]
    if health != "up":
        error = target.get("lastError") or "not scraped yet"
        return [
            fail(
                "scraped",
                f"job {job} scrapes {where} but it is {health}: {error}",
                "check that rollbackd listens there and answers GET /metrics",
            )
        ]
    return [ok("scraped", f"job {job} scrapes {where} (up)")]
