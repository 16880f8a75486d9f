"""Alertmanager: reachable, each rollback alert of each service routed to this daemon's webhook with
its bearer token, and (``--send-test-alert``) a test alert that really arrives and is recognised as a
test: labelled ``rollbackd_test="true"``, which the policy records and never acts on."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from rollbackd.doctor import Finding, Status, fail, ok, skip, warn
from rollbackd.doctor.context import Context
from rollbackd.doctor.contract import TEST_ALERTNAME
from rollbackd.doctor.routing import receivers_for, webhooks_of
from rollbackd.errors import BackendError
from rollbackd.policy import TEST_ID_LABEL, TEST_LABEL
from rollbackd.reasons import Reason

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_EXAMPLE = "config/alertmanager.example.yml"


async def check_alertmanager(ctx: Context) -> list[Finding]:
    cfg = ctx.settings.alertmanager
    if cfg is None:
        ctx.down["alertmanager"] = "alertmanager.url is not set"
        return [
            warn(
                "alertmanager",
                "alertmanager.url is not set: the doctor cannot check that alerts reach rollbackd",
                "set alertmanager.url in the config (e.g. http://127.0.0.1:9093)",
            )
        ]
    try:
        status = await ctx.alertmanager("status")
    except Exception as exc:
        ctx.down["alertmanager"] = str(exc)
        raise
    ctx.cache["am_config"] = yaml.safe_load(((status.get("config") or {}).get("original")) or "") or {}
    version = (status.get("versionInfo") or {}).get("version", "?")
    return [ok("alertmanager", f"Alertmanager {version} answers at {cfg.url}")]


def _points_here(url: str, ctx: Context) -> bool:
    mine, theirs = urlsplit(ctx.webhook_url), urlsplit(url)
    if theirs.path.rstrip("/") != mine.path or theirs.port != mine.port:
        return False
    wildcard = ctx.settings.listen.rpartition(":")[0].strip("[]") in ("0.0.0.0", "::")
    return wildcard or theirs.hostname == mine.hostname or {theirs.hostname, mine.hostname} <= _LOOPBACK


def bearer(http_config: dict[str, Any], token: str) -> tuple[Status, str, str]:
    """Whether a webhook's http_config sends rollbackd's webhook token: status, what, what to do."""
    auth = http_config.get("authorization") or {}
    kind = str(auth.get("type") or "Bearer")
    credentials, path = auth.get("credentials"), auth.get("credentials_file")
    credentials = credentials or http_config.get("bearer_token")
    path = path or http_config.get("bearer_token_file")
    if auth and kind.lower() != "bearer":
        return Status.FAIL, f"authorization type {kind}, not Bearer", "set http_config.authorization.type: Bearer"
    if path:
        return _token_file(Path(str(path)), token)
    if credentials:
        return Status.OK, "an inline bearer token (not comparable from here; prefer credentials_file)", ""
    return (
        Status.FAIL,
        "no bearer token: rollbackd answers 401 to every notification",
        f"add http_config.authorization.credentials_file holding rollbackd's webhook token ({_EXAMPLE})",
    )


def _token_file(path: Path, token: str) -> tuple[Status, str, str]:
    fix = f"write rollbackd's webhook token (auth.webhook_token) into {path}, readable by Alertmanager"
    try:
        held = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return (
            Status.FAIL,
            f"credentials_file {path} does not exist: Alertmanager sends no token and every "
            "notification fails (amtool check-config does not notice)",
            fix,
        )
    except OSError as exc:
        return (
            Status.WARN,
            f"credentials_file {path} cannot be read here ({exc.strerror}): cannot tell if it holds the webhook token",
            "run the doctor as a user that can read it, or --send-test-alert",
        )
    if held != token:
        return Status.FAIL, f"credentials_file {path} holds another token than auth.webhook_token", fix
    return Status.OK, f"bearer token from {path} (matches auth.webhook_token)", ""


async def check_routing(ctx: Context) -> list[Finding]:
    ctx.need("alertmanager")
    config: dict[str, Any] = ctx.cache.get("am_config") or {}
    rule_labels = await ctx.rule_labels()
    findings = []
    for name, svc in ctx.settings.services.items():
        alerts = [a for a in svc.policy.rollback_alerts if not any(c in a for c in "*?[")]
        problems: list[tuple[Status, str, str]] = []
        good: set[str] = set()
        for alert in alerts:
            labels = {**rule_labels.get(alert, {}), "alertname": alert, ctx.settings.service_label: name}
            problems += _route_problems(ctx, config, alert, labels, good)
        findings.append(_routing_finding(ctx, name, alerts, problems, good))
    if not rule_labels:  # without the rules' team/severity labels the walk may take another route
        note = " (the rules' own labels are unknown: Prometheus did not list them; routed on alertname and service)"
        findings = [f if f.status is Status.SKIP else dataclasses.replace(f, detail=f.detail + note) for f in findings]
    return findings


def _route_problems(
    ctx: Context, config: dict[str, Any], alert: str, labels: dict[str, str], good: set[str]
) -> list[tuple[Status, str, str]]:
    receivers = receivers_for(config.get("route") or {}, labels)
    hooks = [h for r in receivers for h in webhooks_of(config, r) if _points_here(str(h.get("url", "")), ctx)]
    if not hooks:
        return [
            (
                Status.FAIL,
                f"{alert} goes to receiver(s) {', '.join(receivers)}, none posting to {ctx.webhook_url}",
                f"route it to a receiver whose webhook_configs url is {ctx.webhook_url} "
                f"({_EXAMPLE}: receiver rollbackd)",
            )
        ]
    verdicts = [_hook_verdict(h, ctx.webhook_token) for h in hooks]
    best = min(verdicts, key=lambda v: [Status.OK, Status.WARN, Status.FAIL].index(v[0]))
    if best[0] is Status.OK:
        good.add(best[1])
        return []
    return [(best[0], f"{alert}: {best[1]}", best[2])]


def _hook_verdict(hook: dict[str, Any], token: str) -> tuple[Status, str, str]:
    verdict = bearer(hook.get("http_config") or {}, token)
    if verdict[0] is Status.OK and hook.get("send_resolved", True) is False:
        return (
            Status.WARN,
            "send_resolved is false: rollbackd never hears an alert resolve (alert_cleared "
            "waits in vain, a pending rollback is not cancelled)",
            "set send_resolved: true on the webhook",
        )
    return verdict


def _routing_finding(
    ctx: Context, service: str, alerts: list[str], problems: list[tuple[Status, str, str]], good: set[str]
) -> Finding:
    if not alerts:
        return skip("routing", "the policy has no rollback alerts", service)
    if not problems:
        return ok(
            "routing",
            f"{len(alerts)} rollback alert(s) reach {ctx.webhook_url} with {'; '.join(sorted(good))}",
            service,
        )
    worst = Status.FAIL if any(p[0] is Status.FAIL for p in problems) else Status.WARN
    first = next(p for p in problems if p[0] is worst)
    detail = "; ".join(dict.fromkeys(p[1] for p in problems))
    return Finding("routing", worst, detail, first[2], service)


# ---- the test alert ---------------------------------------------------------------------------------
def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_alert(
    ctx: Context, service: str, run_id: str, rule_labels: dict[str, str], *, starts: datetime, ends: datetime
) -> Any:
    labels = {
        **rule_labels,
        "alertname": TEST_ALERTNAME,
        ctx.settings.service_label: service,
        TEST_LABEL: "true",
        TEST_ID_LABEL: run_id,
    }
    return {
        "labels": labels,
        "startsAt": _iso(starts),
        "endsAt": _iso(ends),
        "annotations": {"summary": f"rollbackd doctor test alert for {service}: recorded, never acted on"},
    }


async def check_test_alert(ctx: Context) -> list[Finding]:
    if not ctx.send_test_alert:
        return [skip("test_alert", "not sent: `rollbackd doctor --send-test-alert` proves an alert arrives")]
    ctx.need("alertmanager", "rollbackd")
    rule_labels = await ctx.rule_labels()
    jobs = []
    for name, svc in ctx.settings.services.items():
        first = next((a for a in svc.policy.rollback_alerts if a in rule_labels), None)
        # The labels of a real rollback alert (team, severity): the test alert takes the same route.
        jobs.append(_one_test(ctx, name, rule_labels.get(first, {}) if first else {}))
    return list(await asyncio.gather(*jobs))


async def _post(ctx: Context, alert: Any) -> None:
    cfg = ctx.settings.alertmanager
    assert cfg is not None  # ctx.need("alertmanager") passed
    token = cfg.bearer_token.get_secret_value() if cfg.bearer_token else None
    status, body = await ctx.request(
        "alertmanager", "POST", f"{cfg.url.rstrip('/')}/api/v2/alerts", body=[alert], token=token, timeout=cfg.timeout
    )
    if status != 200:
        raise BackendError("alertmanager", f"POST /api/v2/alerts answered {status}: {str(body)[:200]}")


async def _one_test(ctx: Context, service: str, rule_labels: dict[str, str]) -> Finding:
    run_id = f"doctor-{int(time.time())}-{secrets.token_hex(3)}"
    started, starts = time.monotonic(), datetime.now(UTC)
    await _post(
        ctx,
        test_alert(
            ctx, service, run_id, rule_labels, starts=starts, ends=starts + timedelta(seconds=ctx.test_timeout + 60)
        ),
    )
    try:
        decision = await _wait_decision(ctx, service, run_id, started + ctx.test_timeout)
    finally:  # resolve it: the same alert, ending now
        await _post(ctx, test_alert(ctx, service, run_id, rule_labels, starts=starts, ends=datetime.now(UTC)))
    waited = time.monotonic() - started
    if decision is None:
        return fail(
            "test_alert",
            f"a test alert posted to Alertmanager did not reach rollbackd in {waited:.0f}s",
            'see the routing finding; the Alertmanager log names failed notifications ("Notify for alerts failed")',
            service,
        )
    if decision.get("reason") != Reason.TEST_ALERT.value:
        return fail(
            "test_alert",
            f"the test alert arrived but was decided {decision.get('action')}/"
            f"{decision.get('reason')}, not recognised as a test",
            "upgrade rollbackd",
            service,
        )
    return ok(
        "test_alert",
        f"arrived after {waited:.1f}s and was recognised as a test (ignored, recorded)"
        f"{_also_to(ctx, test_alert(ctx, service, run_id, rule_labels, starts=starts, ends=starts))}",
        service,
    )


def _also_to(ctx: Context, alert: Any) -> str:
    """The other receivers Alertmanager sent the test alert to: the humans should know why they got it."""
    config: dict[str, Any] = ctx.cache.get("am_config") or {}
    here = {
        name
        for name in receivers_for(config.get("route") or {}, alert["labels"])
        if any(_points_here(str(h.get("url", "")), ctx) for h in webhooks_of(config, name))
    }
    others = [r for r in receivers_for(config.get("route") or {}, alert["labels"]) if r not in here]
    return f"; also sent to receiver(s) {', '.join(others)} (its summary says it is a test)" if others else ""


async def _wait_decision(ctx: Context, service: str, run_id: str, deadline: float) -> dict[str, Any] | None:
    while True:
        body = await ctx.daemon(f"/v1/status?service={service}")
        decisions = ((body.get("services") or {}).get(service) or {}).get("last_decisions") or []
        found = next((d for d in decisions if d.get("detail") == run_id), None)
        if found is not None or time.monotonic() > deadline:
            return dict(found) if found is not None else None
        await asyncio.sleep(0.5)
