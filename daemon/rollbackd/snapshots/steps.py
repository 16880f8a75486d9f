"""Plan steps of the data rollback: ``snapshot.safety`` -> ``data.prepare`` -> (traffic.cut) -> ``data.swap``,
and ``data.roll_forward``. Each is idempotent and has an is_done check against the real world, so a crash
between prepare and swap resumes (the prepared copies are found and swapped) or, if the incident is
aborted, leaves copies that the retention job discards (they belong to no active incident).

What they keep in the incident's context (survives a restart):
    data_target       the snapshot set to restore (chosen once, before the safety snapshot exists)
    safety_snapshot   the set taken of the live data before anything changed
    data_prepared     {"snapshot_set", "restored": {store: restored record}}
    data_swapped      {store: what its swap did (kept copy, downtime)}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from rollbackd import facts
from rollbackd.errors import FatalError, NotFoundError
from rollbackd.plan import BaseStep, StepContext
from rollbackd.records import JSON
from rollbackd.snapshots import SAFETY
from rollbackd.snapshots.dataset import DataSet

CODE_ONLY = {"skipped": "code-only target"}


def dataset(ctx: StepContext) -> DataSet:
    data = ctx.runtime.caps.snapshots
    if not isinstance(data, DataSet):
        raise FatalError(f"service {ctx.service} has no `snapshots:` configured; data steps cannot run")
    return data


async def target_set(ctx: StepContext, data: DataSet) -> str | None:
    """The set to restore: the target's ``snapshot_set``; without one, the newest verified set when the
    service tracks no releases; else None (a code-only target). Chosen once and kept."""
    saved = ctx.fact(facts.DATA_TARGET)
    if saved is not None:
        return saved.snapshot_set
    target = ctx.fact(facts.TARGET)
    chosen = target.snapshot_set if target is not None else None
    if chosen is None and not ctx.runtime.config.releases.track:
        good = await data.restore_target()
        if good is None:
            raise FatalError(
                f"no verified snapshot set of {ctx.service} to restore (safety snapshots are "
                "restored only by explicit id)"
            )
        chosen = good.id
    await ctx.remember(facts.DATA_TARGET, facts.DataTarget(chosen))
    return chosen


async def _exists(data: DataSet, set_id: Any) -> bool:
    if not isinstance(set_id, str):
        return False
    try:
        await data.get(set_id)
    except NotFoundError:
        return False
    return True


class SafetySnapshot(BaseStep):
    type = "snapshot.safety"

    def describe(self) -> str:
        return "snapshot the live data (kept for roll-forward) before anything changes"

    async def is_done(self, ctx: StepContext) -> bool:
        return await _exists(dataset(ctx), ctx.fact(facts.SAFETY_SNAPSHOT))

    async def run(self, ctx: StepContext) -> JSON:
        data = dataset(ctx)
        target = await target_set(ctx, data)
        if target is None:
            return dict(CODE_ONLY)
        if await self.is_done(ctx):
            return {"snapshot_set": ctx.fact(facts.SAFETY_SNAPSHOT), "target": target, "found": True}
        # a restore that will be refused takes no safety snapshot
        await data.preflight(target, ctx.incident.id, allow_foreign=ctx.fact(facts.ALLOW_FOREIGN))
        if not data.safety_snapshot:
            return {"skipped": "safety_snapshot: false", "target": target}
        snap = await data.create(reason=f"safety snapshot before incident {ctx.incident.id}", kind=SAFETY)
        await ctx.remember(facts.SAFETY_SNAPSHOT, snap.id)
        return {
            "snapshot_set": snap.id,
            "target": target,
            "bytes": snap.size_bytes,
            "summary": f"safety snapshot {snap.id} ({snap.size_bytes} bytes)",
        }


async def _every_store(ctx: StepContext, check: Callable[[Any, JSON], Awaitable[bool]]) -> bool:
    """True when this incident prepared its copies and ``check`` holds for every store's copy."""
    prepared = ctx.fact(facts.DATA_PREPARED)
    if prepared is None:
        return False
    data = dataset(ctx)
    for name, restored in prepared.restored.items():
        if not await check(data.snapshotters[name], restored):
            return False
    return True


class PrepareData(BaseStep):
    type = "data.prepare"

    def describe(self) -> str:
        return "restore the target snapshot aside (all stores in parallel), counts checked, VACUUM ANALYZE"

    async def is_done(self, ctx: StepContext) -> bool:
        return await _every_store(ctx, lambda snapshotter, restored: snapshotter.is_prepared(restored))

    async def run(self, ctx: StepContext) -> JSON:
        data = dataset(ctx)
        target = await target_set(ctx, data)
        if target is None:
            return dict(CODE_ONLY)
        saved = ctx.fact(facts.DATA_PREPARED)
        if saved is not None and saved.snapshot_set == target and await self.is_done(ctx):
            return {**saved.to_json(), "found": True}
        async with data.lock:
            restored = await data.prepare(target)
        prepared = facts.DataPrepared(target, restored)
        await ctx.remember(facts.DATA_PREPARED, prepared)
        return {
            **prepared.to_json(),
            "summary": f"snapshot {target} restored aside: "
            + ", ".join(f"{n} -> {r.get('database') or r.get('collection')}" for n, r in restored.items()),
        }


class SwapData(BaseStep):
    type = "data.swap"

    def describe(self) -> str:
        return "swap the restored copies in (database rename, alias switch); the replaced ones are kept"

    async def is_done(self, ctx: StepContext) -> bool:
        return await _every_store(ctx, lambda snapshotter, restored: snapshotter.is_swapped(restored, ctx.incident.id))

    async def run(self, ctx: StepContext) -> JSON:
        data = dataset(ctx)
        if await target_set(ctx, data) is None:
            return dict(CODE_ONLY)
        prepared = ctx.fact(facts.DATA_PREPARED)
        if prepared is None:
            raise FatalError("nothing prepared to swap: data.prepare must run before data.swap")
        done = ctx.fact(facts.DATA_SWAPPED) or {}
        async with data.lock:  # a store swapped before a crash is found by is_swapped and not swapped again
            swapped = await data.swap(dict(prepared.restored), ctx.incident.id, done=done)
        await ctx.remember(facts.DATA_SWAPPED, swapped)
        downtime = {n: s.get("downtime_s") for n, s in swapped.items()}
        changed = properties_changed(swapped)
        return {
            "snapshot_set": prepared.snapshot_set,
            "swapped": swapped,
            "downtime_s": downtime,
            "properties_changed": changed,
            "summary": "swapped " + ", ".join(f"{n} ({d}s)" for n, d in downtime.items()) + describe_changes(changed),
        }


def properties_changed(swapped: JSON) -> JSON:
    """Database properties each store's swap changed (live -> snapshot), by store."""
    return {n: s["properties_changed"] for n, s in swapped.items() if s.get("properties_changed")}


def describe_changes(changed: JSON) -> str:
    """``; database properties changed (live -> snapshot): postgres settings [...] -> [...]`` or nothing."""
    parts = [
        f"{store} {prop} {c['live']} -> {c['snapshot']}"
        for store, props in changed.items()
        for prop, c in props.items()
    ]
    return "; database properties changed (live -> snapshot): " + "; ".join(parts) if parts else ""


class RollForwardData(BaseStep):
    type = "data.roll_forward"

    def describe(self) -> str:
        return "put the data a rollback replaced back live (the kept pre-rollback copies)"

    async def _swapped(self, ctx: StepContext, data: DataSet) -> JSON | None:
        of = ctx.fact(facts.ROLLFORWARD_OF)
        if not of:
            raise FatalError("data.roll_forward needs `rollforward_of` (the incident to undo) in the context")
        if data.state is None:
            raise FatalError("no state store to read incident " + str(of))
        original = await data.state.get_incident(of)
        if original is None:
            raise FatalError(f"no incident {of}")
        return facts.DATA_SWAPPED.of(original.context) or None

    async def is_done(self, ctx: StepContext) -> bool:
        data = dataset(ctx)
        swapped = await self._swapped(ctx, data)
        if swapped is None:
            return False
        for name, info in swapped.items():
            if not await data.snapshotters[name].is_rolled_forward(info, ctx.incident.id):
                return False
        return True

    async def run(self, ctx: StepContext) -> JSON:
        data = dataset(ctx)
        swapped = await self._swapped(ctx, data)
        if swapped is None:
            of = ctx.fact(facts.ROLLFORWARD_OF)
            return {"skipped": f"incident {of} swapped no data"}
        async with data.lock:
            result = await data.roll_forward(swapped, ctx.incident.id)
        await ctx.remember(facts.DATA_ROLLED_FORWARD, result)
        return {"rolled_forward": result, "of": ctx.fact(facts.ROLLFORWARD_OF)}
