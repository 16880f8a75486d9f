"""Retention: keep the last N snapshot sets, every set that belongs to a green release (a release with
``green_at`` set: that is the known-good data of known-good code), and every set an active incident uses.
Also discards restore-aside copies left by an interrupted or aborted rollback (no active incident owns them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rollbackd.errors import RollbackdError
from rollbackd.records import JSON
from rollbackd.snapshots.dataset import DataSet

log = logging.getLogger(__name__)


def plan(sets: list[Any], keep_last: int, green: set[str], in_use: set[str]) -> tuple[list[JSON], list[str]]:
    """Pure: which sets stay (with why) and which go. ``sets`` newest first."""
    keep: list[JSON] = []
    delete: list[str] = []
    for i, snap in enumerate(sets):
        why = []
        if i < keep_last:
            why.append(f"one of the last {keep_last}")
        if snap.release is not None and snap.release in green:
            why.append(f"belongs to green release {snap.release}")
        if snap.id in in_use:
            why.append("used by an active incident")
        if why:
            keep.append({"id": snap.id, "why": ", ".join(why)})
        else:
            delete.append(snap.id)
    return keep, delete


def _used_sets(context: JSON) -> set[str]:
    out = set()
    for key in ("data_target", "data_prepared"):
        value = context.get(key)
        if isinstance(value, dict) and value.get("snapshot_set"):
            out.add(str(value["snapshot_set"]))
    target = context.get("target")
    if isinstance(target, dict) and target.get("snapshot_set"):
        out.add(str(target["snapshot_set"]))
    if context.get("safety_snapshot"):
        out.add(str(context["safety_snapshot"]))
    return out


async def prune(data: DataSet, *, keep_last: int, dry_run: bool = False) -> JSON:
    green: set[str] = set()
    in_use: set[str] = set()
    owned: set[str] = set()
    if data.state is not None:
        green = {r.version for r in await data.state.releases(data.service, 10_000) if r.green_at is not None}
        for incident in await data.state.active_incidents():
            if incident.service == data.service:
                in_use |= _used_sets(incident.context)
                prepared = incident.context.get("data_prepared")
                if isinstance(prepared, dict):
                    owned |= {str(r.get("database") or r.get("collection")) for r in prepared["restored"].values()}
    sets = await data.list()
    keep, delete = plan(sets, keep_last, green, in_use)
    if not dry_run:
        for set_id in delete:
            await asyncio.to_thread(data.store.delete, set_id)
        await asyncio.to_thread(data.store.sweep)
    orphans = await discard_orphans(data, owned, dry_run=dry_run)
    log.info("snapshot_prune", extra={"deleted": delete, "kept": len(keep), "dry_run": dry_run})
    return {"service": data.service, "dry_run": dry_run, "deleted": delete, "kept": keep,
            "orphan_copies_dropped": orphans}


async def discard_orphans(data: DataSet, owned: set[str], *, dry_run: bool) -> list[str]:
    dropped: list[str] = []
    for name, snapshotter in data.snapshotters.items():
        copies = getattr(snapshotter, "copies", None)
        if copies is None:
            continue
        for copy in await copies():
            if copy in owned:
                continue
            if not dry_run:
                try:
                    await snapshotter.discard({"database": copy, "collection": copy})
                except RollbackdError as exc:  # the server said it is live or kept: it stays
                    log.warning("snapshot_copy_kept", extra={"store": name, "copy": copy, "error": str(exc)})
                    continue
            dropped.append(f"{name}:{copy}")
    return dropped
