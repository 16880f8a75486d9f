"""The verify capability's hooks into the core (see rollbackd.plugins): config validation, the
per-service VerifySuite in ``runtime.caps.verify``, ``POST /v1/verify``, its OpenAPI part and
the last verification in `status`.

    services:
      rag:
        verify:
          checks:                      # each: type, name?, initial_delay, deadline, interval,
            - type: smoke              #       error_limit, inconclusive_limit, dry_run, after
              requests: [...]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from rollbackd.errors import ConfigError, PayloadError
from rollbackd.registry import resolve, validate_options
from rollbackd.verify import BACKENDS, CheckOptions, Verifier, overall
from rollbackd.verify.suite import VerifySuite, last_key

if TYPE_CHECKING:
    from rollbackd.config import ServiceConfig, Settings
    from rollbackd.plan import ServiceRuntime
    from rollbackd.wiring import Core


def _checks_of(name: str, svc: ServiceConfig) -> tuple[list[Verifier], list[str]]:
    """Build (without I/O) the checks of one service; problems carry key paths."""
    base = f"services.{name}.verify"
    cfg = svc.verify or {}
    problems = [f"{base}.{key}: unknown key (expected `checks`)" for key in cfg if key != "checks"]
    raw = cfg.get("checks")
    if not isinstance(raw, list) or not raw:
        return [], [*problems, f"{base}.checks: expected a non-empty list of checks"]
    checks: list[Verifier] = []
    for i, spec in enumerate(raw):
        path = f"{base}.checks[{i}]"
        if not isinstance(spec, dict) or "type" not in spec:
            problems.append(f"{path}.type: missing")
            continue
        try:
            cls = resolve(BACKENDS, str(spec["type"]), path)
            options = validate_options(cls, spec, path)
            check: Verifier = cls(options)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        problems += _check_problems(check, [c.name for c in checks], path)
        checks.append(check)
    return checks, problems


def _check_problems(check: Verifier, earlier: list[str], path: str) -> list[str]:
    opts: CheckOptions = check.options
    problems = []
    if check.name in earlier:
        problems.append(f"{path}.name: {check.name!r} is used twice; give each check of a type a `name`")
    problems += [f"{path}.after: {n!r} is not an earlier check" for n in opts.after if n not in earlier]
    scorer = getattr(opts, "scorer", None)
    if isinstance(scorer, dict):
        from rollbackd.verify.scorers import SCORERS

        try:
            cls = resolve(SCORERS, str(scorer.get("type", "lexical")), f"{path}.scorer")
            validate_options(cls, {"type": "lexical", **scorer}, f"{path}.scorer")
        except ConfigError as exc:
            problems.extend(exc.problems)
        else:
            from rollbackd.verify.scorers import ragas

            if scorer.get("type") == "ragas" and not ragas.available():
                problems.append(f"{path}.scorer.type: {ragas.EXTRA_HINT}")
    return problems


def _plan_problems(name: str, svc: ServiceConfig, checks: list[Verifier]) -> list[str]:
    from rollbackd.verify.suite import GRACE_S

    names = [c.name for c in checks]
    problems = []
    for i, entry in enumerate(svc.plan):
        specs = entry.parallel if hasattr(entry, "parallel") else [entry]
        for spec in specs:
            if spec.type != "verify":
                continue
            if svc.verify is None:
                problems.append(f"services.{name}.plan[{i}]: a `verify` step needs services.{name}.verify.checks")
            only = spec.options().get("only") or []
            problems += [
                f"services.{name}.plan[{i}].only: unknown check {n!r}"
                for n in only
                if isinstance(n, str) and names and n not in names
            ]
            chosen = [c for c in checks if not only or c.name in only]
            slowest = max(chosen, key=lambda c: _longest(c, checks), default=None)
            if slowest is not None and _longest(slowest, checks) + GRACE_S > spec.timeout:
                problems.append(
                    f"services.{name}.plan[{i}].timeout: {spec.timeout:g}s is shorter than check "
                    f"{slowest.name!r} may take ({_longest(slowest, checks) + GRACE_S:g}s with its delay "
                    "and the checks it runs after)"
                )
    return problems


def _order_problems(name: str, svc: ServiceConfig, checks: list[Verifier]) -> list[str]:
    """alert_cleared must run after traffic.restore: with the users cut off, the alert's rule has no
    traffic to judge, and a quiet rule is not a cleared alert."""
    cleared = {c.name for c in checks if c.type == "alert_cleared"}
    specs = [
        (i, spec)
        for i, entry in enumerate(svc.plan)
        for spec in (entry.parallel if hasattr(entry, "parallel") else [entry])
    ]
    restore = next((i for i, spec in specs if spec.type == "traffic.restore"), None)
    if restore is None or not cleared:
        return []
    problems = []
    for i, spec in specs:
        only = set(spec.options().get("only") or cleared) if spec.type == "verify" else set()
        if i < restore and only & cleared:
            problems.append(
                f"services.{name}.plan[{i}].only: {', '.join(sorted(only & cleared))} runs before "
                f"traffic.restore (plan[{restore}]); give it its own verify step after it"
            )
    return problems


def _longest(check: Verifier, checks: list[Verifier]) -> float:
    """Seconds a check may take, counting the checks it waits for (``after``)."""
    before = [_longest(c, checks) for c in checks if c.name in check.options.after]
    return max(before, default=0.0) + check.options.initial_delay + check.options.deadline


def validate(settings: Settings) -> list[str]:
    problems: list[str] = []
    for name, svc in settings.services.items():
        checks: list[Verifier] = []
        if svc.verify is not None:
            checks, found = _checks_of(name, svc)
            problems += found
        problems += _plan_problems(name, svc, checks) + _order_problems(name, svc, checks)
    return problems


def build(core: Core) -> None:
    for name, runtime in core.services.items():
        if runtime.config.verify is None:
            continue
        checks, problems = _checks_of(name, runtime.config)
        if problems:
            raise ConfigError(problems[0].split(":")[0], problems[0], problems=problems)
        runtime.caps.verify = VerifySuite(
            service=name,
            checks=checks,
            caps=runtime.caps,
            prometheus=core.prometheus,
            store=core.store,
            metrics=core.metrics,
            service_label=core.settings.service_label,
            rollback_alerts=tuple(runtime.config.policy.rollback_alerts),
        )


async def close(core: Core) -> None:
    for runtime in core.services.values():
        suite = runtime.caps.verify
        if isinstance(suite, VerifySuite):
            await suite.close()


async def status(core: Core, runtime: ServiceRuntime) -> dict[str, Any]:
    if not isinstance(runtime.caps.verify, VerifySuite):
        return {"verification": None}
    last = await core.store.get_kv(last_key(runtime.name))
    return {"verification": last}


# ---- API ------------------------------------------------------------------------------------------
class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str | None = None
    only: Annotated[list[str], Field(max_length=20)] | None = None
    dry_run: bool = False  # true: list what would run, run nothing


def _suite_for(core: Core, service: str | None) -> VerifySuite:
    runtime = core.controls.service(service)  # one service may go unnamed; an unknown one is a 400
    suite = runtime.caps.verify
    if not isinstance(suite, VerifySuite):
        raise PayloadError("service", f"service {runtime.name!r} has no verify checks configured")
    return suite


async def post_verify(request: web.Request) -> web.Response:
    """Run the checks now, against the live service; changes nothing. 200 whatever the verdict."""
    from rollbackd.api.keys import CORE
    from rollbackd.api.v1 import body_of

    core = request.app[CORE]
    body = await body_of(request, VerifyBody)
    suite = _suite_for(core, body.service)
    if body.dry_run:
        return web.json_response(
            {
                "service": suite.service,
                "dry_run": True,
                "verdict": None,
                "would_run": suite.describe(body.only),
                "results": [],
            }
        )
    results = await suite.run(only=body.only)
    return web.json_response(
        {
            "service": suite.service,
            "dry_run": False,
            "verdict": overall(results).value,
            "summary": "\n".join(r.line() for r in results),
            "results": [r.to_json() for r in results],
        }
    )


def routes(app: web.Application) -> None:
    app.router.add_post("/v1/verify", post_verify)


def openapi() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    from rollbackd.api.openapi import op

    paths = {
        "/v1/verify": {
            "post": op(
                "Run the verification checks now (a deploy gate); changes nothing. `verdict` is pass, fail or "
                "inconclusive; `results` has one CheckResult per check",
                body=VerifyBody,
            )
        }
    }
    return paths, [VerifyBody]
