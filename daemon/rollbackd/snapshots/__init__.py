"""Data snapshots: one Snapshotter per store type, a SnapshotSet per point in time.

A *snapshot set* is one snapshot of every configured store of a service, taken together, kept in the
filesystem store (rollbackd.snapshots.store). A data rollback is two-phase (rollbackd.snapshots.dataset):
every store restores its snapshot *aside* (a new database / collection) while the live data still serves,
and only when all are ready does each store swap (database rename / alias switch). The live copy that
was replaced is kept (``<db>__pre_<incident>``, the collection the alias pointed at) for roll-forward.

    Snapshotter (per store)         DataSet (per service: runtime.caps.snapshots)
      create(dest)  -> manifest       create / list / get / latest / verify / prune
      prepare(...)  -> restored       prepare (all stores, parallel; on failure discard the rest)
      check_swap / swap / discard     swap (only when all are ready) / discard / roll_forward
      roll_forward / live
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

JSON = dict[str, Any]
SAFETY: Final = "safety"

BACKENDS: Final[Mapping[str, str]] = {
    "postgres": "rollbackd.snapshots.postgres:PostgresSnapshotter",
    "qdrant": "rollbackd.snapshots.qdrant:QdrantSnapshotter",
}


@dataclass(frozen=True, slots=True)
class SnapshotSet:
    """One snapshot of each store of a service, taken together. ``manifests`` by store name."""

    id: str
    service: str
    created_at: float
    release: str | None
    verified: bool
    manifests: dict[str, JSON]
    reason: str = ""
    path: Path | None = field(default=None, compare=False)
    size_bytes: int = 0
    files: dict[str, str] = field(default_factory=dict, compare=False)  # relative path -> sha256
    kind: str = "manual"  # manual | scheduled | safety (a safety set holds the state a rollback replaced)

    @property
    def is_safety(self) -> bool:
        return self.kind == SAFETY

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "service": self.service,
            "created_at": self.created_at,
            "release": self.release,
            "verified": self.verified,
            "reason": self.reason,
            "kind": self.kind,
            "size_bytes": self.size_bytes,
            "manifests": self.manifests,
        }


class Snapshotter(Protocol):
    """One store of a service (a Postgres database, a Qdrant alias). All methods are idempotent."""

    kind: str
    name: str  # the store's name in config (``postgres``, ``qdrant``)

    async def create(self, dest: Path) -> JSON:
        """Write a consistent snapshot of the live data into ``dest`` (a fresh directory); return the
        store's manifest (counts, versions, durations). Never blocks the service's writers."""
        ...

    async def estimate_bytes(self) -> int:
        """About how many bytes ``create`` will write (checked against free disk before starting)."""
        ...

    async def prepare(self, manifest: JSON, src: Path, set_id: str) -> JSON:
        """Restore the snapshot in ``src`` aside, check its counts against ``manifest``; return the
        ``restored`` record (kind, database or collection, ``expected``) that swap and discard take."""
        ...

    async def is_prepared(self, restored: JSON) -> bool: ...

    async def check_swap(self, restored: JSON, tag: str = "") -> None:
        """Raise FatalError (with the reason) when the swap must not happen; changes nothing."""
        ...

    async def swap(self, restored: JSON, tag: str) -> JSON:
        """Put the restored copy live, keep the replaced one (named after ``tag``); return figures
        including ``downtime_s`` and what was kept."""
        ...

    async def is_swapped(self, restored: JSON, tag: str) -> bool: ...

    async def discard(self, restored: JSON) -> None:
        """Drop a prepared copy that will not be swapped (missing is fine)."""
        ...

    async def roll_forward(self, swapped: JSON, tag: str) -> JSON:
        """Undo ``swap``: the kept copy goes live again, the current one is kept under ``tag``."""
        ...

    async def is_rolled_forward(self, swapped: JSON, tag: str) -> bool: ...

    async def live(self) -> JSON:
        """What is live now (for a restore's dry-run: what would be replaced)."""
        ...

    async def preflight(self, manifest: JSON, tag: str) -> None:
        """Raise FatalError when a swap of this snapshot would be refused; before anything is written."""
        ...

    async def origin_problems(self, manifest: JSON) -> list[str]:
        """How the snapshot's origin (database or alias, server) differs from this store; empty when not."""
        ...

    async def copies(self) -> list[str]:
        """Restore-aside copies on the server that are neither live nor kept (orphans, for retention)."""
        ...

    async def kept(self) -> list[JSON]:
        """Copies kept for roll-forward: ``{"name", "tag", ...}``; ``tag`` sorts by time."""
        ...

    async def drop_kept(self, kept: JSON) -> bool:
        """Let a kept copy go (the server is asked first: a live one stays); True when it was deleted."""
        ...

    async def close(self) -> None: ...


def safe_tag(tag: str) -> str:
    """Ids as they appear in database and collection names: lower case, ``-`` as ``_`` (an incident id
    ``20261122-031502-a1b2`` becomes ``20261122_031502_a1b2``), so names never need quoting by hand."""
    return tag.lower().replace("-", "_")


def restored_name(base: str, set_id: str) -> str:
    return f"{base}__rb_{safe_tag(set_id)}"


def aside_name(base: str, set_id: str) -> str:
    """A fresh restore-aside name per attempt, ``<base>__rb_<set>_<4 hex>``: restoring a set whose earlier copy
    is live (or kept) must never reuse, and so replace, that copy. Callers also check the server."""
    return f"{restored_name(base, set_id)}_{secrets.token_hex(2)}"


def kept_alias(alias: str, tag: str) -> str:
    """The alias that marks a Qdrant collection a swap replaced as kept (``<alias>__kept_<tag>``): Qdrant
    cannot rename a collection, so "kept" is recorded on the server itself, and deletion (which never
    touches a collection an alias points at) leaves it alone until retention lets it go."""
    return f"{alias}__kept_{safe_tag(tag)}"


def pre_name(base: str, tag: str) -> str:
    return f"{base}__pre_{safe_tag(tag)}"


def rollforward_name(base: str, tag: str) -> str:
    return f"{base}__rf_{safe_tag(tag)}"


__all__ = [
    "BACKENDS",
    "JSON",
    "SAFETY",
    "SnapshotSet",
    "Snapshotter",
    "aside_name",
    "kept_alias",
    "pre_name",
    "restored_name",
    "rollforward_name",
    "safe_tag",
]
