"""DataSet: a service's stores together (``runtime.caps.snapshots``). Snapshot sets are taken of
all stores at once; a restore is two-phase: every store prepares aside in parallel, and the swaps start
only when all are ready. If one prepare fails, the others are discarded and the live data stays as it was.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rollbackd.errors import FatalError
from rollbackd.records import JSON
from rollbackd.snapshots import SAFETY, SnapshotSet, Snapshotter
from rollbackd.snapshots.store import SnapshotStore, fs_error

if TYPE_CHECKING:
    from rollbackd.snapshots.jobs import Jobs
    from rollbackd.state import IncidentJournal, ReleaseStore

    class DataSetState(ReleaseStore, IncidentJournal, Protocol):
        """What a data set reads of the journal: releases (the live one), incidents (copies in use)."""


log = logging.getLogger(__name__)
T = TypeVar("T")


class DataSet:
    def __init__(
        self,
        *,
        service: str,
        store: SnapshotStore,
        snapshotters: Mapping[str, Snapshotter],
        state: DataSetState | None = None,
        on_success: Callable[[str, float], None] | None = None,
    ) -> None:
        self.service = service
        self.store = store
        self.snapshotters = dict(snapshotters)
        self.state = state
        self.on_success = on_success
        self.safety_snapshot = True
        self.lock = asyncio.Lock()  # one data operation of a service at a time (create, restore, prune)
        self.jobs: Jobs | None = None  # long operations the CLI follows (rollbackd.snapshots.jobs)

    # ---- reading ----------------------------------------------------------------------------------
    async def list(self) -> builtins.list[SnapshotSet]:
        return await self.fs(self.store.list)

    async def own(self) -> builtins.list[SnapshotSet]:
        """The sets taken of this service (a directory shared by mistake holds others too: never chosen,
        never pruned here)."""
        return [s for s in await self.list() if s.service == self.service]

    async def get(self, set_id: str) -> SnapshotSet:
        return await self.fs(self.store.get, set_id)

    async def fs(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A snapshot-store call in a thread; an OS error comes out naming the path and the errno."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except OSError as exc:
            raise fs_error(exc, self.store.root) from exc

    async def latest(
        self, *, release: str | None = None, verified_only: bool = True, include_safety: bool = False
    ) -> SnapshotSet | None:
        """The newest set (of ``release``); never a safety snapshot unless asked: one taken during a later
        incident is labelled with the release then live, yet holds the damaged data it was taken to keep."""
        for snap in await self.own():
            if (verified_only and not snap.verified) or (snap.is_safety and not include_safety):
                continue
            if release is not None and snap.release != release:
                continue
            return snap
        return None

    async def restore_target(self) -> SnapshotSet | None:
        """The set a rollback restores when none is named: the newest verified set that is not a safety
        snapshot (those hold the state a rollback replaced: for roll-forward, or by explicit id), preferring
        sets taken while a green release was live."""
        good = [s for s in await self.own() if s.verified and not s.is_safety]
        green = await self.green_releases()
        return next((s for s in good if s.release in green), good[0] if good else None)

    async def green_releases(self) -> set[str]:
        if self.state is None:
            return set()
        return {r.version for r in await self.state.releases(self.service, 10_000) if r.green_at is not None}

    async def live_release(self) -> str | None:
        if self.state is None:
            return None
        try:
            history = await self.state.releases(self.service)
        except Exception:  # the snapshot matters more than its label
            log.warning("snapshot_release_unknown", exc_info=True)
            return None
        live = next((r for r in history if r.status == "deployed"), None)
        return live.version if live else None

    # ---- create and verify ------------------------------------------------------------------------
    async def create(self, *, reason: str, kind: str = "manual") -> SnapshotSet:
        """Snapshot every store (in parallel) into one set; atomic: all stores or no set at all."""
        async with self.lock:
            try:
                return await self._create(reason, kind)
            except OSError as exc:  # the set's directory itself (mkdir, a store writing its files)
                raise fs_error(exc, self.store.root) from exc

    async def _create(self, reason: str, kind: str) -> SnapshotSet:
        estimates = await asyncio.gather(*(s.estimate_bytes() for s in self.snapshotters.values()))
        free = await self.fs(self.store.free_bytes)
        if sum(estimates) * 1.1 > free:
            raise FatalError(
                f"too little disk in {self.store.root}: {free} bytes free, the snapshot needs about "
                f"{sum(estimates)} (database and collection sizes)"
            )
        created_at = time.time()
        release = await self.live_release()
        set_id, tmp = await asyncio.to_thread(self.store.reserve, created_at)
        try:
            for name in self.snapshotters:
                (tmp / name).mkdir()
            parts = await asyncio.gather(*(s.create(tmp / name) for name, s in self.snapshotters.items()))
            manifests = {
                name: {**part, "release": release} for name, part in zip(self.snapshotters, parts, strict=True)
            }
            snap = await asyncio.to_thread(
                self.store.commit,
                tmp,
                set_id,
                created_at=created_at,
                release=release,
                reason=reason,
                manifests=manifests,
                kind=kind,
            )
        except BaseException:
            await asyncio.to_thread(self.store.abort, tmp)
            raise
        for name in self.snapshotters:
            if self.on_success is not None:
                self.on_success(name, created_at)
        log.info("snapshot_created", extra={"set_id": snap.id, "bytes": snap.size_bytes, "release": release})
        return snap

    async def verify(self, set_id: str) -> JSON:
        return await self.fs(self.store.verify, set_id)

    # ---- two-phase restore ------------------------------------------------------------------------
    async def preflight(
        self, set_id: str, tag: str, *, allow_foreign: str | None = None, rehash: bool = True
    ) -> SnapshotSet:
        """Everything that would refuse a restore of ``set_id``, checked before anything is written (no
        safety snapshot is taken for a restore that will be refused): the set is complete, is this
        service's (same stores, databases, servers: else refused unless ``allow_foreign`` names the
        service it was taken of), re-hashes, and every store accepts it (a swap it would refuse)."""
        snap = await self.get(set_id)
        missing = sorted(set(self.snapshotters) - set(snap.manifests))
        if missing:
            raise FatalError(f"snapshot set {set_id} has no snapshot of store(s) {', '.join(missing)}")
        await self._check_origin(snap, allow_foreign)
        if rehash:
            await self._verified(set_id)
        for name, snapshotter in self.snapshotters.items():
            await snapshotter.preflight(snap.manifests[name], tag)
        return snap

    async def prepare(self, set_id: str) -> dict[str, JSON]:
        """Re-hash the set (a corrupt one is refused before anything is created), then restore every
        store aside in parallel. If any fails, the prepared others are dropped and the error raised."""
        snap = await self.get(set_id)
        missing = sorted(set(self.snapshotters) - set(snap.manifests))
        if missing:
            raise FatalError(f"snapshot set {set_id} has no snapshot of store(s) {', '.join(missing)}")
        assert snap.path is not None
        names = list(self.snapshotters)
        # The re-hash runs alongside the restores (it reads the same files); a mismatch discards them all.
        results = await asyncio.gather(
            self._verified(set_id),
            *(self.snapshotters[n].prepare(snap.manifests[n], snap.path / n, set_id) for n in names),
            return_exceptions=True,
        )
        check, results = results[0], results[1:]
        failures = [(n, r) for n, r in zip(names, results, strict=True) if isinstance(r, BaseException)]
        prepared = {n: r for n, r in zip(names, results, strict=True) if isinstance(r, dict)}
        if isinstance(check, BaseException):
            failures.insert(0, ("store", check))
        if failures:
            await self.discard(prepared)
            name, exc = failures[0]
            log.warning("data_prepare_failed", extra={"store": name, "error": str(exc)})
            if isinstance(exc, Exception):
                raise exc
            raise exc
        return prepared

    async def _check_origin(self, snap: SnapshotSet, allow_foreign: str | None) -> None:
        problems = [] if snap.service == self.service else [f"service {snap.service} (this is {self.service})"]
        for name, snapshotter in self.snapshotters.items():
            problems += [f"{name}: {p}" for p in await snapshotter.origin_problems(snap.manifests[name])]
        if problems and allow_foreign != snap.service:
            raise FatalError(
                f"snapshot set {snap.id} was taken of " + "; ".join(problems) + "; refused, nothing "
                f"changed (to restore it anyway, name its service: allow_foreign={snap.service!r})"
            )
        if problems:
            log.warning("snapshot_foreign_restore", extra={"set_id": snap.id, "problems": problems})

    async def _verified(self, set_id: str) -> None:
        result = await self.verify(set_id)
        if not result["verified"]:
            raise FatalError(
                f"snapshot set {set_id} failed verification ({result['error']}); refused, the live data is untouched"
            )

    async def discard(self, prepared: Mapping[str, JSON]) -> builtins.list[str]:
        dropped = []
        for name, restored in prepared.items():
            try:
                await self.snapshotters[name].discard(restored)
                dropped.append(name)
            except Exception:  # discarding is best effort; the retention job sweeps what is left
                log.exception("data_discard_failed", extra={"store": name})
        return dropped

    async def swap(
        self, prepared: Mapping[str, JSON], tag: str, done: Mapping[str, JSON] | None = None
    ) -> dict[str, JSON]:
        """Swap every store; all checks first, so a refusal changes nothing; if a swap fails after others
        succeeded, those are put back. ``done``: stores already swapped (on resume; the world is asked too)."""
        done = dict(done or {})
        todo = {n: r for n, r in prepared.items() if n not in done}
        for name, restored in todo.items():
            if await self.snapshotters[name].is_swapped(restored, tag):
                done[name] = {"resumed": True, "found_swapped": True, **_kept_of(restored, tag)}
        todo = {n: r for n, r in todo.items() if n not in done}
        await asyncio.gather(*(self.snapshotters[n].check_swap(r, tag) for n, r in todo.items()))
        now: dict[str, JSON] = {}
        for name, restored in todo.items():
            try:
                done[name] = now[name] = await self.snapshotters[name].swap(restored, tag)
            except Exception as exc:
                raise await self._undo(name, exc, now, tag) from exc
        return done

    async def _undo(self, failed: str, exc: Exception, swapped: dict[str, JSON], tag: str) -> Exception:
        """A swap failed after others succeeded: put those back, so the live data stays one consistent pair."""
        if not swapped:
            return exc
        undone, stuck = [], []
        for name, info in swapped.items():
            try:
                await self.snapshotters[name].roll_forward(info, tag)
                undone.append(name)
            except Exception as undo_exc:  # report it; a human must look
                stuck.append(f"{name} ({undo_exc})")
        log.error("data_swap_failed", extra={"store": failed, "undone": undone, "stuck": stuck})
        state = f"swapped back: {', '.join(undone) or 'none'}" + (
            f"; STILL SWAPPED: {', '.join(stuck)}" if stuck else "; live data as before"
        )
        return FatalError(f"swap of {failed} failed: {exc} ({state})")

    async def restore(self, set_id: str, tag: str, *, allow_foreign: str | None = None) -> JSON:
        """The whole restore in one call, without the incident engine (tests, benchmarks): refusals first,
        then the safety snapshot, prepare and swap under the lock."""
        started = time.monotonic()
        await self.preflight(set_id, tag, allow_foreign=allow_foreign)  # refused: no safety snapshot taken
        safety = None
        if self.safety_snapshot:
            safety = (await self.create(reason=f"safety snapshot before restore {tag}", kind=SAFETY)).id
        async with self.lock:
            prepared = await self.prepare(set_id)
            swapped = await self.swap(prepared, tag)
        return {
            "op": tag,
            "snapshot_set": set_id,
            "safety_snapshot": safety,
            "restored": prepared,
            "swapped": swapped,
            "downtime_s": {n: s.get("downtime_s") for n, s in swapped.items()},
            "seconds": round(time.monotonic() - started, 3),
        }

    async def roll_forward(self, swapped: Mapping[str, JSON], tag: str) -> dict[str, JSON]:
        out: dict[str, JSON] = {}
        for name, info in swapped.items():
            snapshotter = self.snapshotters[name]
            if await snapshotter.is_rolled_forward(info, tag):
                out[name] = {"found_done": True}
            else:
                out[name] = await snapshotter.roll_forward(info, tag)
        return out

    async def live(self) -> dict[str, JSON]:
        names = list(self.snapshotters)
        parts = await asyncio.gather(*(self.snapshotters[n].live() for n in names))
        return dict(zip(names, parts, strict=True))

    async def close(self) -> None:
        if self.jobs is not None:
            await self.jobs.close()
        for snapshotter in self.snapshotters.values():
            await snapshotter.close()


def _kept_of(restored: JSON, tag: str) -> JSON:
    """What a swap found already done keeps, reconstructed from the names (for roll-forward)."""
    from rollbackd.snapshots import pre_name

    if restored.get("mode") == "in_place":
        return {"kind": "postgres", "mode": "in_place", "live": restored["live"], "kept": None}
    if restored.get("kind") == "postgres":
        live = restored["live"]
        return {
            "kind": "postgres",
            "mode": "rename",
            "live": live,
            "kept": pre_name(live, tag),
            "restored": restored["database"],
        }
    return {
        "kind": restored.get("kind"),
        "alias": restored.get("alias"),
        "current": restored.get("collection"),
        "previous": restored.get("previous"),
        "kept": restored.get("previous"),
    }
