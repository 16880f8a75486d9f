"""QdrantSnapshotter (``type: qdrant``): the collection behind an alias, snapshotted and downloaded into the
store; restored aside by upload into a fresh ``<alias>__rb_<id>_<4 hex>`` (priority ``snapshot``, checksum
given); swapped by ``create_alias`` actions in ONE update_collection_aliases request (each re-points an alias
in place; a delete + create would leave no alias if the create failed: Qdrant applies actions in order
without rollback): every alias that read the replaced collection, and a ``<alias>__kept_<tag>`` marker on
the replaced collection, kept for roll-forward.

Nothing an alias points at is ever deleted: the check is made against the server's aliases at the moment of
deletion (retention, prune, prepare, drill teardown), never inferred from a name.

qdrant-client has no download or upload: those are plain aiohttp with the same ``api-key`` header. Every
error names the endpoint and Qdrant's own message (rollbackd.snapshots.qdrant_http).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from rollbackd.errors import FatalError
from rollbackd.records import JSON
from rollbackd.snapshots import aside_name, kept_alias, restored_name
from rollbackd.snapshots.qdrant_http import QdrantHttp

SNAPSHOT_FILE = "collection.snapshot"


class QdrantOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(pattern=r"^https?://")
    api_key: SecretStr | None = None
    alias: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")  # the name the application reads
    timeout: float = Field(default=120.0, gt=0)
    # upload: send the file (works anywhere); recover: the node reads it itself by file:// (it must see rollbackd's
    # snapshot directory under the same path, e.g. a co-located node with the directory mounted)
    restore_via: Literal["upload", "recover"] = "upload"


class QdrantSnapshotter:
    kind = "qdrant"
    Options = QdrantOptions

    def __init__(self, options: QdrantOptions, *, name: str = "qdrant") -> None:
        self.options = options
        self.name = name
        self.alias = options.alias
        self.http = QdrantHttp(
            options.url, options.api_key.get_secret_value() if options.api_key else None, options.timeout
        )

    async def target(self) -> str | None:
        """The collection the alias points at (None when the alias does not exist)."""
        for item in await self.http.aliases():
            if item["alias_name"] == self.alias:
                return str(item["collection_name"])
        return None

    async def _live_collection(self) -> tuple[str, bool]:
        collection = await self.target()
        if collection is not None:
            return collection, True
        if await self.http.exists(self.alias):
            return self.alias, False
        raise FatalError(f"qdrant: neither an alias nor a collection named {self.alias!r} exists")

    async def estimate_bytes(self) -> int:
        collection, _ = await self._live_collection()
        points = await self.http.points(collection)
        return max(points, 1) * 4096  # a generous guess: the snapshot size is known only once written

    async def create(self, dest: Path) -> JSON:
        started = time.monotonic()
        collection, aliased = await self._live_collection()
        points = await self.http.points(collection)
        desc = await self.http.create_snapshot(collection)
        created_s = time.monotonic() - started
        try:
            digest, size = await self.http.download(collection, desc["name"], dest / SNAPSHOT_FILE)
        finally:
            await self.http.delete_snapshot(collection, desc["name"])
        if desc.get("checksum") and desc["checksum"] != digest:
            raise FatalError(
                f"qdrant snapshot {desc['name']}: downloaded sha256 {digest} differs from Qdrant's "
                f"checksum {desc['checksum']}"
            )
        return {
            "kind": self.kind,
            "store": self.name,
            "server": self.http.url,
            "alias": self.alias,
            "collection": collection,
            "aliased": aliased,
            "collections": {self.alias: {"points": points}},
            "snapshot": desc["name"],
            "sha256": digest,
            "bytes": size,
            "durations": {"create_s": round(created_s, 3), "total_s": round(time.monotonic() - started, 3)},
        }

    async def _fresh_name(self, set_id: str) -> str:
        """A restore-aside name no collection or alias has on the server now."""
        taken = set(await self.http.collections()) | {a["alias_name"] for a in await self.http.aliases()}
        for _ in range(32):
            name = aside_name(self.alias, set_id)
            if name not in taken:
                return name
        raise FatalError(f"qdrant: no free restore-aside name for set {set_id}")

    async def prepare(self, manifest: JSON, src: Path, set_id: str) -> JSON:
        started = time.monotonic()
        target = await self._fresh_name(set_id)
        try:
            if self.options.restore_via == "recover":
                await self.http.recover(target, (src / SNAPSHOT_FILE).resolve().as_uri(), manifest["sha256"])
            else:
                await self.http.upload(target, src / SNAPSHOT_FILE, manifest["sha256"])
            points = await self.http.points(target)
            expected = int(manifest["collections"][self.alias]["points"])
            if points != expected:
                raise FatalError(f"qdrant: restored {target} has {points} points, the manifest says {expected}")
        except BaseException:
            await self.discard({"collection": target})
            raise
        return {
            "kind": self.kind,
            "collection": target,
            "alias": self.alias,
            "set_id": set_id,
            "previous": await self.target(),
            "expected": {"collections": {self.alias: expected}},
            "durations": {"restore_s": round(time.monotonic() - started, 3)},
        }

    async def is_prepared(self, restored: JSON) -> bool:
        return await self.http.exists(restored["collection"])

    async def discard(self, restored: JSON) -> None:
        await self.drop(restored["collection"])

    async def drop(self, name: str) -> None:
        """Delete a collection rollbackd made, asking the server first: one that any alias points at is live
        (or kept for roll-forward) and is refused, whatever its name says. Missing is fine."""
        holders = await self.http.holders(name)
        if holders or name == self.alias:
            raise FatalError(
                f"qdrant: refusing to delete collection {name!r}: "
                + (
                    f"alias(es) {', '.join(holders)} point at it"
                    if holders
                    else "it is the collection the application reads"
                )
            )
        if name in await self.http.collections():
            await self.http.delete_collection(name)

    async def origin_problems(self, manifest: JSON) -> list[str]:
        """How the snapshot's origin differs from this store (another alias, another Qdrant)."""
        problems = []
        if manifest.get("alias") not in (None, self.alias):
            problems.append(f"alias {manifest['alias']} (this store's is {self.alias})")
        if manifest.get("server") not in (None, self.http.url):
            problems.append(f"Qdrant at {manifest['server']} (this store's is {self.http.url})")
        return problems

    async def preflight(self, manifest: JSON, tag: str) -> None:
        """What would refuse the swap, checked before anything is written (no safety snapshot, no copy)."""
        if await self.target() is None and await self.http.exists(self.alias):
            raise FatalError(
                f"qdrant: {self.alias!r} is a collection, not an alias; run "
                "`rollbackd snapshot adopt-alias` first (the application must read through an alias)"
            )

    async def check_swap(self, restored: JSON, tag: str = "") -> None:
        await self.preflight({}, tag)
        if not await self.http.exists(restored["collection"]):
            raise FatalError(f"qdrant: the restored collection {restored['collection']} is gone")

    async def readers(self, collection: str | None) -> list[str]:
        """The aliases the application may read ``collection`` through (all but rollbackd's kept markers)."""
        if collection is None:
            return [self.alias]
        marker = kept_alias(self.alias, "")
        return [a for a in await self.http.holders(collection) if not a.startswith(marker)] or [self.alias]

    async def swap(self, restored: JSON, tag: str) -> JSON:
        await self.check_swap(restored, tag)
        previous = await self.target()
        aliases = await self.readers(previous)
        point = dict.fromkeys(aliases, str(restored["collection"]))
        marker = kept_alias(self.alias, tag)
        if previous is not None:  # the replaced collection is kept: an alias marks it, in the same request
            point[marker] = previous
        started = time.monotonic()
        await self.http.update_aliases(point)
        downtime = time.monotonic() - started
        return {
            "kind": self.kind,
            "alias": self.alias,
            "aliases": aliases,
            "previous": previous,
            "current": restored["collection"],
            "kept": previous,
            "kept_alias": marker if previous is not None else None,
            "downtime_s": round(downtime, 4),
        }

    async def is_swapped(self, restored: JSON, tag: str) -> bool:
        return bool(await self.target() == restored["collection"])

    async def roll_forward(self, swapped: JSON, tag: str) -> JSON:
        previous, current = swapped.get("previous"), swapped.get("current")
        if not previous or previous not in await self.http.collections():
            raise FatalError(f"qdrant: the pre-rollback collection {previous!r} is gone")
        marker = kept_alias(self.alias, "")
        point = dict.fromkeys(swapped.get("aliases") or [self.alias], str(previous))
        if current and current in await self.http.collections():
            point[kept_alias(self.alias, tag)] = str(current)
        unmark = tuple(a for a in await self.http.holders(str(previous)) if a.startswith(marker))
        started = time.monotonic()
        await self.http.update_aliases(point, unmark)
        return {
            "kind": self.kind,
            "alias": self.alias,
            "aliases": list(swapped.get("aliases") or [self.alias]),
            "current": previous,
            "previous": current,
            "kept": current,
            "downtime_s": round(time.monotonic() - started, 4),
        }

    async def is_rolled_forward(self, swapped: JSON, tag: str) -> bool:
        return bool(swapped.get("previous")) and bool(await self.target() == swapped.get("previous"))

    async def live(self) -> JSON:
        collection, aliased = await self._live_collection()
        return {
            "kind": self.kind,
            "alias": self.alias,
            "collection": collection,
            "aliased": aliased,
            "collections": {self.alias: {"points": await self.http.points(collection)}},
        }

    async def adopt_alias(self, work_dir: Path) -> JSON:
        """Make ``alias`` an alias: copy the collection of that name to ``<alias>__v1`` (snapshot, upload),
        drop it, create the alias. Between the drop and the alias, reads of the name fail: the window is
        measured and returned (``window_s``) so it can be announced."""
        if await self.target() is not None:
            return {"adopted": False, "detail": f"{self.alias!r} is already an alias of {await self.target()}"}
        if not await self.http.exists(self.alias):
            raise FatalError(f"qdrant: no collection {self.alias!r} to adopt")
        manifest = await self.create(work_dir)
        copy = f"{self.alias}__v1"
        if await self.http.exists(copy):
            raise FatalError(f"qdrant: {copy!r} exists already; remove it or adopt by hand")
        await self.http.upload(copy, work_dir / SNAPSHOT_FILE, manifest["sha256"])
        points = await self.http.points(copy)
        if points != manifest["collections"][self.alias]["points"]:
            await self.http.delete_collection(copy)
            raise FatalError(
                f"qdrant: the copy {copy} has {points} points, the original had "
                f"{manifest['collections'][self.alias]['points']}; nothing changed"
            )
        holders = await self.http.holders(self.alias)
        if holders:
            await self.http.delete_collection(copy)
            raise FatalError(f"qdrant: alias(es) {', '.join(holders)} read {self.alias!r}; nothing changed")
        started = time.monotonic()
        await self.http.delete_collection(self.alias)
        await self.http.point_alias(self.alias, copy)
        window = time.monotonic() - started
        return {
            "adopted": True,
            "alias": self.alias,
            "collection": copy,
            "points": points,
            "window_s": round(window, 4),
        }

    async def copies(self) -> list[str]:
        """Restore-aside collections no alias points at (prepared, never swapped in): orphans to discard. A
        swapped-in copy is live (the alias points at it) or kept (a kept marker does)."""
        prefix = restored_name(self.alias, "")
        held = {a["collection_name"] for a in await self.http.aliases()}
        return [c for c in await self.http.collections() if c.startswith(prefix) and c not in held]

    async def kept(self) -> list[JSON]:
        """Collections kept for roll-forward, by their marker alias (``tag`` sorts by time)."""
        marker = kept_alias(self.alias, "")
        return [
            {"name": a["collection_name"], "tag": a["alias_name"][len(marker) :], "marker": a["alias_name"]}
            for a in await self.http.aliases()
            if a["alias_name"].startswith(marker)
        ]

    async def drop_kept(self, kept: JSON) -> bool:
        """Let a kept collection go: its marker first, then the collection unless another alias (live) still
        points at it. True when the collection was deleted."""
        await self.http.update_aliases({}, (str(kept["marker"]),))
        if await self.http.holders(str(kept["name"])):
            return False
        await self.drop(str(kept["name"]))
        return True

    async def close(self) -> None:
        await self.http.close()
