"""Collections, points and aliases of the Qdrant test server, in memory, saved on shutdown.

Vectors of a collection live in one float32 `array` (n * dim), ids and payloads in lists indexed by slot,
so 100k points of dim 64 take about 26 MB of vectors. Name resolution, collection creation/deletion and
alias actions follow lib/storage/src/content_manager/toc/ (collection_meta_ops.rs, alias_mapping.rs):
an alias wins over a collection of the same name when resolving, alias actions apply in order with no
rollback, deleting a collection drops its aliases.
"""

from __future__ import annotations

import bisect
import copy
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import points as pt
from .errors import (
    QdrantError,
    already_exists,
    bad_input,
    collection_missing,
    format_error,
    not_found,
    validation_error,
)

DISTANCES = ("Cosine", "Euclid", "Dot", "Manhattan")
SEGMENTS_COUNT = 2
INDEXING_THRESHOLD_KB = 10_000


def default_config(vectors: Mapping[str, Any]) -> dict[str, Any]:
    """A collection config as Qdrant 1.19 stores it with its default config.yaml."""
    return {
        "params": {
            "vectors": dict(vectors),
            "shard_number": 1,
            "replication_factor": 1,
            "write_consistency_factor": 1,
            "on_disk_payload": True,
        },
        "hnsw_config": {
            "m": 16,
            "ef_construct": 100,
            "full_scan_threshold": 10_000,
            "max_indexing_threads": 0,
            "on_disk": False,
        },
        "optimizer_config": {
            "deleted_threshold": 0.2,
            "vacuum_min_vector_number": 1000,
            "default_segment_number": 0,
            "max_segment_size": None,
            "memmap_threshold": None,
            "indexing_threshold": INDEXING_THRESHOLD_KB,
            "flush_interval_sec": 5,
            "max_optimization_threads": None,
        },
        "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0, "wal_retain_closed": 1},
        "quantization_config": None,
        "strict_mode_config": {"enabled": False},
    }


def check_vectors_config(vectors: object) -> dict[str, Any]:
    """`vectors: {size, distance}`; the test server keeps one unnamed dense vector per point."""
    if not isinstance(vectors, Mapping) or "size" not in vectors or "distance" not in vectors:
        raise QdrantError(
            400, "Bad request: the Qdrant test server supports a single unnamed vector: `vectors: {size, distance}`"
        )
    size, distance = vectors["size"], vectors["distance"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise format_error("JSON body", f"invalid value: `{size}`, expected u64")
    if size < 1:
        raise validation_error("JSON body", "vectors.size", "value 0 invalid, must be 1 or larger")
    if distance not in DISTANCES:
        expected = ", ".join(f"`{d}`" for d in DISTANCES)
        raise format_error("JSON body", f"unknown variant `{distance}`, expected one of {expected}")
    return {"size": size, "distance": distance}


@dataclass
class PointsData:
    """A consistent copy of a collection's points (what a snapshot holds)."""

    ids: list[pt.PointId]
    vectors: array[float]  # float32, len(ids) * dim
    payloads: list[pt.Payload | None]


class Collection:
    def __init__(self, name: str, config: dict[str, Any], data: PointsData | None = None) -> None:
        self.name = name
        self.config = config
        vectors = config["params"]["vectors"]
        self.dim: int = vectors["size"]
        self.cosine = vectors["distance"] == "Cosine"
        self.operation_id = 0
        self._ids: list[pt.PointId] = []
        self._slots: dict[pt.PointId, int] = {}
        self._vectors: array[float] = array("f")
        self._payloads: list[pt.Payload | None] = []
        self._order: list[tuple[pt.SortKey, int]] | None = None
        if data is not None:
            self._load(data)

    def _load(self, data: PointsData) -> None:
        if len(data.vectors) != len(data.ids) * self.dim or len(data.payloads) != len(data.ids):
            raise ValueError("points data sizes do not match")
        self._ids = list(data.ids)
        self._slots = {pid: slot for slot, pid in enumerate(self._ids)}
        if len(self._slots) != len(self._ids):
            raise ValueError("duplicate point ids")
        self._vectors = array("f", data.vectors)
        self._payloads = list(data.payloads)

    def __len__(self) -> int:
        return len(self._ids)

    def upsert(self, items: Sequence[tuple[object, object, object]], mode: str = "upsert") -> int:
        """Validate every point first (a bad point rejects the batch), then apply; returns operation_id."""
        checked: list[tuple[pt.PointId, list[float], pt.Payload | None]] = []
        for raw_id, raw_vector, raw_payload in items:
            point_id = pt.parse_point_id(raw_id)
            vector = pt.parse_dense_vector(raw_vector, self.dim)
            if raw_payload is not None and not isinstance(raw_payload, dict):
                raise format_error("JSON body", "invalid type: expected a map for payload")
            checked.append((point_id, pt.normalize(vector) if self.cosine else vector, raw_payload))
        for point_id, vector, payload in checked:
            slot = self._slots.get(point_id)
            if slot is None:
                if mode == "update_only":
                    continue
                self._slots[point_id] = len(self._ids)
                self._ids.append(point_id)
                self._vectors.extend(vector)
                self._payloads.append(payload)
                self._order = None
            elif mode != "insert_only":
                self._vectors[slot * self.dim : (slot + 1) * self.dim] = array("f", vector)
                self._payloads[slot] = payload
        self.operation_id += 1
        return self.operation_id

    def _ordered(self) -> list[tuple[pt.SortKey, int]]:
        if self._order is None:
            self._order = sorted((pt.sort_key(pid), slot) for slot, pid in enumerate(self._ids))
        return self._order

    def count(self, flt: Mapping[str, Any] | None) -> int:
        if not flt:
            return len(self._ids)
        return sum(1 for slot, pid in enumerate(self._ids) if pt.matches(flt, pid, self._payloads[slot]))

    def scroll(
        self,
        offset: pt.PointId | None,
        limit: int,
        flt: Mapping[str, Any] | None,
        with_payload: object,
        with_vector: object,
    ) -> dict[str, Any]:
        order = self._ordered()
        start = 0 if offset is None else bisect.bisect_left(order, (pt.sort_key(offset), -1))
        vector_wanted = pt.wants_vector(with_vector)
        records: list[dict[str, Any]] = []
        next_offset: pt.PointId | None = None
        for _, slot in order[start:]:
            pid, payload = self._ids[slot], self._payloads[slot]
            if not pt.matches(flt, pid, payload):
                continue
            if len(records) == limit:
                next_offset = pid
                break
            record: dict[str, Any] = {"id": pid}
            selected = pt.select_payload(payload, with_payload)
            if selected is not None:
                record["payload"] = selected
            if vector_wanted:
                chunk = self._vectors[slot * self.dim : (slot + 1) * self.dim]
                record["vector"] = [pt.f32_out(x) for x in chunk]
            records.append(record)
        return {"points": records, "next_page_offset": next_offset}

    def copy_data(self) -> PointsData:
        """A consistent copy, cheap enough to take inside the event loop."""
        return PointsData(list(self._ids), array("f", self._vectors), list(self._payloads))

    def info(self) -> dict[str, Any]:
        points = len(self._ids)
        vector_kb = points * self.dim * 4 // 1024
        indexed = points if vector_kb >= INDEXING_THRESHOLD_KB else 0
        return {
            "status": "green",
            "optimizer_status": "ok",
            "indexed_vectors_count": indexed,
            "points_count": points,
            "segments_count": SEGMENTS_COUNT,
            "config": copy.deepcopy(self.config),
            "payload_schema": {},
        }


class Store:
    """All collections and aliases; every method runs without awaiting, so it is atomic for readers."""

    def __init__(self) -> None:
        self.collections: dict[str, Collection] = {}
        self.aliases: dict[str, str] = {}

    def resolve_name(self, name: str) -> str:
        real = self.aliases.get(name, name)
        if real not in self.collections:
            raise collection_missing(real)
        return real

    def get(self, name: str) -> Collection:
        return self.collections[self.resolve_name(name)]

    def exists(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.collections

    def create_collection(self, name: str, config: dict[str, Any]) -> Collection:
        if name in self.collections:
            raise already_exists(f"Collection `{name}` already exists!")
        if name in self.aliases:
            raise bad_input(f"Can't create collection with name {name}. Alias with the same name already exists")
        collection = Collection(name, config)
        self.collections[name] = collection
        return collection

    def delete_collection(self, name: str) -> bool:
        self.aliases = {alias: target for alias, target in self.aliases.items() if target != name}
        return self.collections.pop(name, None) is not None

    def replace_points(self, name: str, source: Collection) -> None:
        """Recovery into an existing collection: its points become the snapshot's (vectors must agree)."""
        target = self.collections[name]
        if source.config["params"]["vectors"] != target.config["params"]["vectors"]:
            raise bad_input(
                "Snapshot is not compatible with existing collection: "
                f"Collection vectors: {_rust_vectors(target.config)} "
                f"Snapshot Vectors: {_rust_vectors(source.config)}"
            )
        source.name = name
        source.config = target.config
        source.operation_id = target.operation_id
        self.collections[name] = source

    def update_aliases(self, actions: Sequence[Mapping[str, Any]]) -> None:
        """Apply in order; the first failure stops, and the actions before it stay applied."""
        for action in actions:
            if "create_alias" in action:
                spec = action["create_alias"]
                collection, alias = spec["collection_name"], spec["alias_name"]
                if collection not in self.collections:
                    raise collection_missing(collection)
                if alias in self.collections:
                    raise already_exists(f"Collection `{alias}` already exists!")
                self.aliases[alias] = collection
            elif "delete_alias" in action:
                self.aliases.pop(action["delete_alias"]["alias_name"], None)
            else:
                spec = action["rename_alias"]
                old, new = spec["old_alias_name"], spec["new_alias_name"]
                if old not in self.aliases:
                    raise not_found(f"Alias {old} does not exists!")
                self.aliases[new] = self.aliases.pop(old)

    def collection_aliases(self, name: str) -> list[dict[str, str]]:
        return [
            {"alias_name": alias, "collection_name": name} for alias, target in self.aliases.items() if target == name
        ]

    def all_aliases(self) -> list[dict[str, str]]:
        return [
            {"alias_name": alias, "collection_name": target}
            for alias, target in self.aliases.items()
            if target in self.collections
        ]


def _rust_vectors(config: Mapping[str, Any]) -> str:
    vectors = config["params"]["vectors"]
    return f"Single(VectorParams {{ size: {vectors['size']}, distance: {vectors['distance']} }})"


def vectors_to_le_bytes(vectors: array[float]) -> bytes:
    if sys.byteorder == "little":
        return vectors.tobytes()
    swapped = array("f", vectors)
    swapped.byteswap()
    return swapped.tobytes()


def vectors_from_le_bytes(raw: bytes) -> array[float]:
    vectors: array[float] = array("f")
    vectors.frombytes(raw)
    if sys.byteorder != "little":
        vectors.byteswap()
    return vectors
