"""Retention: keep the last N snapshot sets, every set that belongs to a green release (a release with
``green_at`` set: that is the known-good data of known-good code), the newest verified set that is not a
safety snapshot (what a rollback restores: safety snapshots of damaged state never push it out), and every
set an active incident uses. Kept copies (``<db>__pre_<tag>`` / ``__rf_<tag>``, Qdrant collections marked
``<alias>__kept_<tag>``) have their own bound, ``keep_kept`` per store, newest first. Also discards
restore-aside copies left by an interrupted or aborted rollback (no active incident owns them).

Nothing here decides from a name alone that a copy may go: each store's drop asks its server first.
"""

from __future__ import annotations

import logging
from typing import Any

from rollbackd import facts
from rollbackd.errors import RollbackdError
from rollbackd.records import JSON
from rollbackd.snapshots.dataset import DataSet

log = logging.getLogger(__name__)


def _newest_good(sets: list[Any]) -> str | None:
    return next((s.id for s in sets if getattr(s, "verified", True) and not getattr(s, "is_safety", False)), None)


def plan(sets: list[Any], keep_last: int, green: set[str], in_use: set[str]) -> tuple[list[JSON], list[str]]:
    """Pure: which sets stay (with why) and which go. ``sets`` newest first."""
    keep: list[JSON] = []
    delete: list[str] = []
    newest_good = _newest_good(sets)
    for i, snap in enumerate(sets):
        why = []
        if i < keep_last:
            why.append(f"one of the last {keep_last}")
        if snap.release is not None and snap.release in green:
            why.append(f"belongs to green release {snap.release}")
        if snap.id == newest_good:
            why.append("the newest verified set that is not a safety snapshot")
        if snap.id in in_use:
            why.append("used by an active incident")
        if why:
            keep.append({"id": snap.id, "why": ", ".join(why)})
        else:
            delete.append(snap.id)
    return keep, delete


def plan_kept(kept: list[JSON], keep_kept: int, in_use: set[str]) -> tuple[list[JSON], list[JSON]]:
    """Pure: kept copies of one store, newest (by tag) first: the first ``keep_kept`` and those an active
    incident names stay."""
    ordered = sorted(kept, key=lambda k: str(k["tag"]), reverse=True)
    stay = [k for i, k in enumerate(ordered) if i < keep_kept or k["name"] in in_use]
    return stay, [k for k in ordered if k not in stay]


def _used_sets(context: JSON) -> set[str]:
    data_target, prepared = facts.DATA_TARGET.of(context), facts.DATA_PREPARED.of(context)
    target, safety = facts.TARGET.of(context), facts.SAFETY_SNAPSHOT.of(context)
    named = (
        data_target.snapshot_set if data_target else None,
        prepared.snapshot_set if prepared else None,
        target.snapshot_set if target else None,
        safety,
    )
    return {name for name in named if name}


def _used_copies(context: JSON) -> set[str]:
    """Names of the copies an incident's context holds (prepared, swapped in, kept)."""
    out: set[str] = set()
    prepared = facts.DATA_PREPARED.of(context)
    if prepared is not None:
        out |= {str(r.get("database") or r.get("collection")) for r in prepared.restored.values()}
    for fact in (facts.DATA_SWAPPED, facts.DATA_ROLLED_FORWARD):
        for info in (fact.of(context) or {}).values():
            if isinstance(info, dict):
                out |= {str(info[k]) for k in ("kept", "previous", "current", "restored") if info.get(k)}
    return out


async def _in_use(data: DataSet) -> tuple[set[str], set[str]]:
    sets: set[str] = set()
    copies: set[str] = set()
    if data.state is not None:
        for incident in await data.state.active_incidents():
            if incident.service == data.service:
                sets |= _used_sets(incident.context)
                copies |= _used_copies(incident.context)
    return sets, copies


async def prune(data: DataSet, *, keep_last: int, keep_kept: int = 2, dry_run: bool = False) -> JSON:
    green = await data.green_releases()
    in_use, owned = await _in_use(data)
    sets = await data.own()
    keep, delete = plan(sets, keep_last, green, in_use)
    if not dry_run:
        for set_id in delete:
            await data.fs(data.store.delete, set_id)
        await data.fs(data.store.sweep)
    orphans = await discard_orphans(data, owned, dry_run=dry_run)
    kept_dropped = await prune_kept(data, keep_kept, owned, dry_run=dry_run)
    log.info(
        "snapshot_prune",
        extra={"deleted": delete, "kept": len(keep), "dry_run": dry_run, "kept_copies_dropped": kept_dropped},
    )
    return {
        "service": data.service,
        "dry_run": dry_run,
        "deleted": delete,
        "kept": keep,
        "orphan_copies_dropped": orphans,
        "kept_copies_dropped": kept_dropped,
    }


async def discard_orphans(data: DataSet, owned: set[str], *, dry_run: bool) -> list[str]:
    dropped: list[str] = []
    for name, snapshotter in data.snapshotters.items():
        for copy in await snapshotter.copies():
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


async def prune_kept(data: DataSet, keep_kept: int, owned: set[str], *, dry_run: bool) -> list[str]:
    dropped: list[str] = []
    for name, snapshotter in data.snapshotters.items():
        _, go = plan_kept(await snapshotter.kept(), keep_kept, owned)
        for kept in go:
            if not dry_run:
                try:
                    await snapshotter.drop_kept(kept)
                except RollbackdError as exc:
                    log.warning(
                        "snapshot_kept_copy_stays", extra={"store": name, "copy": kept["name"], "error": str(exc)}
                    )
                    continue
            dropped.append(f"{name}:{kept['name']}")
    return dropped


async def kept_copies(data: DataSet) -> JSON:
    """The kept copies of every store, newest first (for `snapshot list`)."""
    return {
        name: sorted(await snapshotter.kept(), key=lambda k: str(k["tag"]), reverse=True)
        for name, snapshotter in data.snapshotters.items()
    }
