"""Run every check in order, each isolated: an exception becomes a FAIL naming the backend that
failed (and what to do), a dependency known to be down becomes SKIP. Render one line per finding."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from rollbackd.doctor import Check, Finding, Status, backends, daemon, fail, prometheus, skip
from rollbackd.doctor import alertmanager as am
from rollbackd.doctor.context import Context, Skipped
from rollbackd.errors import RollbackdError

log = logging.getLogger(__name__)

# In the order of the chain: the daemon, Prometheus, Alertmanager, then what a rollback uses.
CHECKS: tuple[tuple[str, Check], ...] = (
    ("rollbackd", daemon.check_daemon),
    ("prometheus", prometheus.check_prometheus),
    ("series", prometheus.check_series),
    ("rules", prometheus.check_rules),
    ("scraped", prometheus.check_scraped),
    ("baseline", prometheus.check_baseline),
    ("alertmanager", am.check_alertmanager),
    ("routing", am.check_routing),
    ("test_alert", am.check_test_alert),
    ("releases", daemon.check_releases),
    ("snapshots", daemon.check_snapshots),
    ("drill", daemon.check_drill),
    ("slack", backends.check_slack),
    ("docker", backends.check_docker),
    ("postgres", backends.check_postgres),
    ("qdrant", backends.check_qdrant),
)

_UNREACHABLE_FIX = {
    "rollbackd": "start the daemon (scripts/serve, or rollbackd serve --config F) with this config",
    "prometheus": "start Prometheus, or fix prometheus.url",
    "alertmanager": "start Alertmanager, or fix alertmanager.url",
}


async def run_checks(ctx: Context, checks: Sequence[tuple[str, Check]] = CHECKS) -> list[Finding]:
    findings: list[Finding] = []
    for name, check in checks:
        try:
            findings += await check(ctx)
        except Skipped as exc:
            findings.append(skip(name, str(exc)))
        except RollbackdError as exc:
            fix = _UNREACHABLE_FIX.get(getattr(exc, "backend", "")) if exc.retryable else None
            findings.append(fail(name, str(exc), fix or "see the detail"))
        except Exception as exc:  # a check's own bug must not hide the other checks
            log.exception("doctor_check_crashed", extra={"check": name})
            findings.append(fail(name, f"the check crashed: {type(exc).__name__}: {exc}", "report this bug"))
    return findings


_MARK = {Status.OK: "ok", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "skip"}


def render_text(findings: Sequence[Finding]) -> str:
    width = max((len(f.name) for f in findings), default=10)
    lines = []
    for f in findings:
        fix = f"  -> {f.fix}" if f.fix and f.status in (Status.FAIL, Status.WARN) else ""
        lines.append(f"{_MARK[f.status]:<4}  {f.name:<{width}}  {f.detail}{fix}")
    counts = {s: sum(1 for f in findings if f.status is s) for s in Status}
    lines.append(
        f"{counts[Status.OK]} ok, {counts[Status.WARN]} warning(s), {counts[Status.FAIL]} failed, "
        f"{counts[Status.SKIP]} skipped"
    )
    return "\n".join(lines)


def render_json(findings: Sequence[Finding]) -> str:
    body: dict[str, Any] = {"ok": not failed(findings), "checks": [f.to_json() for f in findings]}
    return json.dumps(body, indent=2)


def failed(findings: Sequence[Finding]) -> bool:
    return any(f.status is Status.FAIL for f in findings)


async def diagnose(
    settings: Any, *, send_test_alert: bool = False, test_timeout: float = 60.0, request_timeout: float = 10.0
) -> list[Finding]:
    """Every check against ``settings`` (a loaded config), in CHECKS order."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        ctx = Context(settings=settings, session=session, send_test_alert=send_test_alert, test_timeout=test_timeout)
        return await run_checks(ctx)
