"""The snapshots capability's hooks into the core (see rollbackd.plugins).

services:
  rag:
    snapshots:
      dir: ./var/snapshots/rag
      safety_snapshot: true               # before any restore (default on)
      schedule: {interval: 6h}            # or {cron: "0 3 * * *"} (UTC); none: only by hand / in rollbacks
      retention: {keep_last: 10, schedule: {interval: 1h}}
      stores:
        postgres: {type: postgres, dsn: "${RAG_PG_DSN}", jobs: 2, schema_version_sql: "SELECT ..."}
        qdrant: {type: qdrant, url: "http://127.0.0.1:6333", api_key: "${QDRANT_API_KEY}", alias: docs}
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rollbackd.config import BackendRef
from rollbackd.errors import ConfigError
from rollbackd.reasons import EventKind
from rollbackd.records import JSON, Event, iso
from rollbackd.registry import format_loc, resolve, validate_options
from rollbackd.scheduler import Schedule
from rollbackd.snapshots import BACKENDS

if TYPE_CHECKING:
    from aiohttp import web

    from rollbackd.plan import ServiceRuntime
    from rollbackd.scheduler import Scheduler
    from rollbackd.snapshots.dataset import DataSet
    from rollbackd.wiring import Core

log = logging.getLogger(__name__)
DATA_STEPS = ("snapshot.safety", "data.prepare", "data.swap", "data.roll_forward")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetentionConfig(_Strict):
    keep_last: Annotated[int, Field(ge=1, le=10_000)] = 10
    keep_kept: Annotated[int, Field(ge=0, le=1_000)] = 2  # kept pre-rollback copies per store (__pre_, __rf_)
    schedule: Schedule = Schedule(interval=3600.0)


class SnapshotsConfig(_Strict):
    dir: Annotated[str, Field(min_length=1)]
    safety_snapshot: bool = True
    schedule: Schedule | None = None
    retention: RetentionConfig = RetentionConfig()
    stores: Annotated[dict[str, BackendRef], Field(min_length=1)]

    @field_validator("stores")
    @classmethod
    def _names(cls, v: dict[str, BackendRef]) -> dict[str, BackendRef]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):
                raise ValueError(f"store name {name!r}: use letters, digits, '_' and '-'")
        return v


def parse(raw: dict[str, Any], path: str) -> SnapshotsConfig:
    """Validate a service's ``snapshots:`` block, every store's options included; errors name the key path."""
    try:
        cfg = SnapshotsConfig.model_validate(raw)
    except ValidationError as exc:
        found = [f"{path}{format_loc(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(path, found[0], problems=found) from exc
    problems: list[str] = []
    for name, ref in cfg.stores.items():
        try:
            validate_options(
                resolve(BACKENDS, ref.type, f"{path}.stores.{name}"), ref.options(), f"{path}.stores.{name}"
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(path, problems[0], problems=problems)
    return cfg


def _plan_types(entries: list[Any]) -> list[str]:
    out: list[str] = []
    for entry in entries:
        specs = getattr(entry, "parallel", None) or [entry]
        out += [spec.type for spec in specs]
    return out


def shared_dirs(dirs: dict[str, str]) -> list[str]:
    """Two services in one snapshot directory would list, prune and restore each other's sets."""
    seen: dict[Path, str] = {}
    problems = []
    for name, raw in dirs.items():
        where = Path(raw).expanduser().resolve()
        if where in seen:
            problems.append(
                f"services.{name}.snapshots.dir: {where} is also services.{seen[where]}'s; two "
                "services may not share a snapshot directory"
            )
        seen.setdefault(where, name)
    return problems


def validate(settings: Any) -> list[str]:
    problems: list[str] = []
    dirs = {
        name: str(svc.snapshots["dir"])
        for name, svc in settings.services.items()
        if isinstance(svc.snapshots, dict) and isinstance(svc.snapshots.get("dir"), str)
    }
    problems += shared_dirs(dirs)
    for name, svc in settings.services.items():
        path = f"services.{name}.snapshots"
        if svc.snapshots is None:
            used = [t for t in _plan_types(svc.plan) if t in DATA_STEPS]
            if used:
                problems.append(f"services.{name}.plan: step {used[0]} needs `{path}` to be configured")
            continue
        try:
            parse(svc.snapshots, path)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems


def build_dataset(runtime: ServiceRuntime, state: Any, on_success: Any = None) -> DataSet:
    from rollbackd.snapshots.dataset import DataSet
    from rollbackd.snapshots.store import SnapshotStore

    assert runtime.config.snapshots is not None
    path = f"services.{runtime.name}.snapshots"
    cfg = parse(runtime.config.snapshots, path)
    snapshotters = {}
    for name, ref in cfg.stores.items():
        cls = resolve(BACKENDS, ref.type, f"{path}.stores.{name}")
        snapshotters[name] = cls(validate_options(cls, ref.options(), f"{path}.stores.{name}"), name=name)
    data = DataSet(
        service=runtime.name,
        store=SnapshotStore(Path(cfg.dir).expanduser(), runtime.name),
        snapshotters=snapshotters,
        state=state,
        on_success=on_success,
    )
    data.safety_snapshot = cfg.safety_snapshot
    return data


def build(core: Core) -> None:
    for runtime in core.services.values():
        if runtime.config.snapshots is None:
            continue

        def on_success(store: str, ts: float, service: str = runtime.name) -> None:
            core.metrics.snapshot_last_success.labels(service, store).set(ts)

        from rollbackd.snapshots.jobs import Jobs

        data = build_dataset(runtime, core.store, on_success)
        data.jobs = Jobs(core.store, runtime.name)
        runtime.caps.snapshots = data


def datasets(core: Core) -> dict[str, DataSet]:
    return {name: rt.caps.snapshots for name, rt in core.services.items() if rt.caps.snapshots is not None}


async def start(core: Core) -> None:
    import asyncio

    for data in datasets(core).values():
        await asyncio.to_thread(data.store.sweep)
        latest = await data.latest(verified_only=False, include_safety=True)
        if latest is not None and data.on_success is not None:
            for store in latest.manifests:
                data.on_success(store, latest.created_at)


async def lead(core: Core) -> None:
    """This replica leads: the newest set the journal says was taken must be in its ``snapshots.dir``
    (retention never deletes the newest). When it is not, the replicas do not share the directory and
    a rollback run here could not restore it: said now (log, Slack), not at 3 AM."""
    from rollbackd.notify import Message

    for data in datasets(core).values():
        taken = await core.store.events(service=data.service, kinds=(EventKind.SNAPSHOT.value,), limit=1)
        newest = str(taken[0].data.get("snapshot_set") or "") if taken else ""
        if not newest or newest in {s.id for s in await data.list()}:
            continue
        where = str(data.store.root)
        log.error("snapshot_set_missing", extra={"service": data.service, "snapshot_set": newest, "dir": where})
        core.notify.post(
            Message(
                kind="escalation",
                title=f"{data.service}: snapshot set {newest} is journaled but not in this replica's {where}",
                service=data.service,
                text=(
                    "This replica leads now, and a rollback run here could not restore the newest set. With "
                    "replicas, `snapshots.dir` must be storage every replica shares (the same NFS or volume)."
                ),
                severity="danger",
            )
        )


async def close(core: Core) -> None:
    for data in datasets(core).values():
        await data.close()


def routes(app: web.Application) -> None:
    from rollbackd.snapshots.api import add_routes

    add_routes(app)


def openapi() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    from rollbackd.snapshots.api import openapi as document

    return document()


def jobs(core: Core, scheduler: Scheduler) -> None:
    from rollbackd.snapshots.retention import prune

    for name, data in datasets(core).items():
        runtime = core.services[name]
        assert runtime.config.snapshots is not None
        cfg = parse(runtime.config.snapshots, f"services.{name}.snapshots")

        async def snapshot(data: DataSet = data) -> None:
            snap = await data.create(reason="scheduled", kind="scheduled")
            await core.store.append_event(
                Event(
                    kind=EventKind.SNAPSHOT,
                    service=data.service,
                    actor="scheduler",
                    data={"why": "scheduled", "snapshot_set": snap.id},
                )
            )

        async def retention(
            data: DataSet = data, keep: int = cfg.retention.keep_last, keep_kept: int = cfg.retention.keep_kept
        ) -> None:
            async with data.lock:
                await prune(data, keep_last=keep, keep_kept=keep_kept)

        if cfg.schedule is not None:
            scheduler.add(f"snapshot:{name}", cfg.schedule, snapshot)
        scheduler.add(f"snapshot-retention:{name}", cfg.retention.schedule, retention)


async def status(core: Core, runtime: ServiceRuntime) -> JSON:
    data = runtime.caps.snapshots
    if data is None:
        return {}
    sets = await data.list()
    latest = sets[0] if sets else None
    return {
        "snapshots": {
            "count": len(sets),
            "latest": None
            if latest is None
            else {
                "id": latest.id,
                "created_at": iso(latest.created_at),
                "release": latest.release,
                "verified": latest.verified,
                "size_bytes": latest.size_bytes,
                "reason": latest.reason,
            },
        }
    }
