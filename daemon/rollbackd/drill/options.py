"""The ``drill:`` section of a service, and its validation (key paths, no I/O).

    services:
      rag:
        drill:
          schedule: {cron: "0 4 * * 1"}   # or {interval: 7d}, or `weekly` / {} (Monday 04:00 UTC)
          port: 0                          # the scratch container's port; 0: a free one (never the live one)
          health_url: "http://127.0.0.1:{port}/healthz"   # default: the live health_url on {port}
          env:                             # overrides of the live container's env, templated
            RAG_PORT: "{port}"
            RAG_PG_DSN: "postgresql://postgres@127.0.0.1:5432/{postgres.database}"
            RAG_QDRANT_COLLECTION: "{qdrant.collection}"
          rewrite: {"http://127.0.0.1:8000": "http://127.0.0.1:{port}"}  # default: derived
          checks: [smoke, ragas_quick, governance]   # default: all but counts and alert_cleared
          container_port: null             # bridge networks: publish this port on 127.0.0.1:{port}
          live_writes: [conversations]     # tables/collections the LIVE service writes by itself: left out of
                                           # the live fingerprint compared before and after the drill
          teardown_timeout: 60s            # a stop (SIGTERM) tears down within this; the rest is swept at start

Templates: ``{port}`` and ``{<store>.<field>}`` of the restored copies (``{postgres.database}``,
``{qdrant.collection}``); anything else is a config error.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rollbackd.config import Duration
from rollbackd.registry import format_loc
from rollbackd.scheduler import Schedule

if TYPE_CHECKING:
    from rollbackd.config import ServiceConfig

WEEKLY = "0 4 * * 1"  # Monday 04:00 UTC
SKIPPED_BY_DEFAULT = ("counts", "alert_cleared")
STORE_FIELDS = {"postgres": ("database", "live", "set_id"), "qdrant": ("collection", "alias", "set_id")}


class DrillOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schedule: Schedule | None = None
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    health_url: str | None = None
    health_timeout: Duration = 120.0
    health_interval: Duration = 0.5
    env: dict[str, str] = {}
    rewrite: dict[str, str] | None = None
    checks: list[str] | None = None
    container: str | None = None  # which of deploy.containers (default: the first)
    container_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    prepare_timeout: Duration = 1800.0
    verify_timeout: Duration = 900.0
    incident_poll: Duration = 1.0  # how often a running drill looks for an incident that pre-empts it
    live_writes: list[str] = []
    teardown_timeout: Duration = 60.0

    @field_validator("schedule", mode="before")
    @classmethod
    def _weekly(cls, v: Any) -> Any:
        if v is True or v == "weekly" or v == {}:
            return {"cron": WEEKLY}
        return v


def _fields(template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return [f"!{exc}"]


def template_problems(template: str, stores: dict[str, str], path: str) -> list[str]:
    """``stores``: store name -> kind. Every ``{...}`` must be ``port`` or ``<store>.<field>``."""
    problems = []
    for name in _fields(template):
        if name.startswith("!"):
            problems.append(f"{path}: {name[1:]}")
            continue
        store, _, field = name.partition(".")
        if name == "port" or (store in stores and field in STORE_FIELDS.get(stores[store], ())):
            continue
        known = ["port", *(f"{s}.{f}" for s, k in stores.items() for f in STORE_FIELDS.get(k, ()))]
        problems.append(f"{path}: unknown placeholder {{{name}}}; known: {', '.join(known)}")
    return problems


def parse(name: str, svc: ServiceConfig) -> tuple[DrillOptions | None, list[str]]:
    base = f"services.{name}.drill"
    try:
        opts = DrillOptions.model_validate(svc.drill or {})
    except ValidationError as exc:
        return None, [f"{base}{format_loc(err['loc'])}: {err['msg']}" for err in exc.errors()]
    return opts, problems_of(name, svc, opts)


def problems_of(name: str, svc: ServiceConfig, opts: DrillOptions) -> list[str]:
    base = f"services.{name}.drill"
    problems = []
    if not svc.snapshots:
        problems.append(f"{base}: a drill needs services.{name}.snapshots (it restores the latest snapshot)")
    deploy = svc.deploy or {}
    if deploy.get("type") != "docker":
        problems.append(
            f"{base}: a drill needs services.{name}.deploy of type docker (it runs the green image "
            f"in a scratch container); found {deploy.get('type')!r}"
        )
    names = [str(c.get("name")) for c in deploy.get("containers") or [] if isinstance(c, dict)]
    if opts.container is not None and opts.container not in names:
        problems.append(f"{base}.container: {opts.container!r} is not one of deploy.containers ({', '.join(names)})")
    return problems + _check_problems(name, svc, opts) + _template_problems(name, svc, opts)


def _check_problems(name: str, svc: ServiceConfig, opts: DrillOptions) -> list[str]:
    base = f"services.{name}.drill"
    if not svc.verify:
        return [f"{base}: a drill needs services.{name}.verify.checks (a drill that verifies nothing proves nothing)"]
    configured = [str(c.get("name") or c.get("type")) for c in svc.verify.get("checks") or [] if isinstance(c, dict)]
    problems = [
        f"{base}.checks[{i}]: unknown check {check!r}; configured: {', '.join(configured)}"
        for i, check in enumerate(opts.checks or [])
        if check not in configured
    ]
    if opts.checks is not None and not opts.checks:
        problems.append(f"{base}.checks: empty; leave it out for the default")
    return problems


def _template_problems(name: str, svc: ServiceConfig, opts: DrillOptions) -> list[str]:
    base = f"services.{name}.drill"
    stores = {
        str(k): str(v.get("type"))
        for k, v in ((svc.snapshots or {}).get("stores") or {}).items()
        if isinstance(v, dict)
    }
    problems = []
    for key, value in opts.env.items():
        problems += template_problems(value, stores, f"{base}.env.{key}")
    for key, value in (opts.rewrite or {}).items():
        problems += template_problems(value, stores, f"{base}.rewrite[{key!r}]")
    if opts.health_url is not None:
        problems += template_problems(opts.health_url, stores, f"{base}.health_url")
        if "{port}" not in opts.health_url:
            problems.append(f"{base}.health_url: must contain {{port}} (the scratch container's port)")
    return problems


def render(template: str, values: dict[str, str]) -> str:
    """Substitute ``{port}`` and ``{store.field}``; values are data (never parsed again)."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


def values_of(port: int, prepared: dict[str, Any]) -> dict[str, str]:
    values = {"port": str(port)}
    for store, restored in prepared.items():
        for key, value in restored.items():
            if isinstance(value, str | int):
                values[f"{store}.{key}"] = str(value)
    return values
