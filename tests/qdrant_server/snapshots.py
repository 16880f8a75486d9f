"""Snapshot files of the Qdrant test server: real (uncompressed) tar archives.

Layout, shaped like a Qdrant collection snapshot (lib/collection/src/collection/snapshots.rs) with the
shard's segment data replaced by a compact form of our own:

    version.info                 "1.19.0"
    config.json                  collection config (params, hnsw_config, optimizer_config, wal_config, ...)
    payload_index.json           {"schema": {}}
    0/shard_config.json          {"type": "Local"}
    0/points/manifest.json       {"format": FORMAT, "count": n, "dim": d, "vector_dtype": "float32-le"}
    0/points/ids.json            [id, ...]            (u64 integers or UUID strings)
    0/points/vectors.f32         n * d little-endian float32
    0/points/payloads.json       [payload-or-null, ...]

Names follow Qdrant: `<collection>-<peer id>-<UTC %Y-%m-%d-%H-%M-%S>.snapshot`, with the sha256 hex in a
sibling `<name>.checksum` file (snapshots_manager.rs); a SnapshotDescription reads both.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

from .storage import PointsData, check_vectors_config, vectors_from_le_bytes, vectors_to_le_bytes

FORMAT = "rollbackd-qdrant-test-server/1"
VERSION = "1.19.0"
_CHUNK = 1 << 20


class SnapshotReadError(Exception):
    """The file is not a readable snapshot; the message is what the server reports."""


def snapshot_name(collection: str, peer_id: int, now: dt.datetime | None = None) -> str:
    moment = now or dt.datetime.now(dt.UTC)
    return f"{collection}-{peer_id}-{moment.strftime('%Y-%m-%d-%H-%M-%S')}.snapshot"


def checksum_path(snapshot: Path) -> Path:
    return snapshot.with_name(snapshot.name + ".checksum")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe(path: Path) -> dict[str, Any]:
    stat = path.stat()
    created = dt.datetime.fromtimestamp(int(stat.st_mtime), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    try:
        checksum: str | None = checksum_path(path).read_text()
    except OSError:
        checksum = None
    return {"name": path.name, "creation_time": created, "size": stat.st_size, "checksum": checksum}


def list_snapshots(directory: Path) -> list[dict[str, Any]]:
    if not directory.is_dir():
        return []
    return [describe(p) for p in sorted(directory.iterdir()) if p.suffix == ".snapshot" and p.is_file()]


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_snapshot(temp_dir: Path, final: Path, config: dict[str, Any], data: PointsData) -> dict[str, Any]:
    """Write the archive aside, then move it and its checksum into place (blocking: run in a thread)."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir / f"{final.name}-arc-{os.getpid()}-{id(data)}"
    now = dt.datetime.now(dt.UTC).timestamp()
    manifest = {
        "format": FORMAT,
        "count": len(data.ids),
        "dim": config["params"]["vectors"]["size"],
        "vector_dtype": "float32-le",
    }
    try:
        with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            _add(tar, "version.info", VERSION.encode(), now)
            _add(tar, "config.json", json.dumps(config).encode(), now)
            _add(tar, "payload_index.json", b'{"schema": {}}', now)
            _add(tar, "0/shard_config.json", b'{"type": "Local"}', now)
            _add(tar, "0/points/manifest.json", json.dumps(manifest).encode(), now)
            _add(tar, "0/points/ids.json", json.dumps(data.ids).encode(), now)
            _add(tar, "0/points/vectors.f32", vectors_to_le_bytes(data.vectors), now)
            _add(tar, "0/points/payloads.json", json.dumps(data.payloads).encode(), now)
        digest = sha256_file(tmp)
        checksum_path(final).write_text(digest)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return describe(final)


def store_file(source: Path, target: Path) -> None:
    """Move an uploaded file into a collection's snapshot directory (no checksum file, as Qdrant)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)


_REQUIRED = (
    "config.json",
    "0/points/manifest.json",
    "0/points/ids.json",
    "0/points/vectors.f32",
    "0/points/payloads.json",
)


def _members(path: Path) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise SnapshotReadError(f"Forbidden entry type in tar archive: {member.type!r}")
                if member.name.lstrip("./") in _REQUIRED:
                    fh = tar.extractfile(member)
                    if fh is None:
                        raise SnapshotReadError("Malformed tar archive, reached unknown entry")
                    members[member.name.lstrip("./")] = fh.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SnapshotReadError(f"Malformed tar archive, unable to read entries: {exc}") from exc
    return members


def read_snapshot(path: Path) -> tuple[dict[str, Any], PointsData]:
    """Parse and check a snapshot file completely (blocking: run in a thread)."""
    members = _members(path)
    missing = [name for name in _REQUIRED if name not in members]
    if missing:
        raise SnapshotReadError(f"Snapshot archive has no {missing[0]}: not a collection snapshot")
    try:
        config = json.loads(members["config.json"])
        manifest = json.loads(members["0/points/manifest.json"])
        ids = json.loads(members["0/points/ids.json"])
        payloads = json.loads(members["0/points/payloads.json"])
        vectors_config = check_vectors_config(config["params"]["vectors"])
    except Exception as exc:
        raise SnapshotReadError(f"Failed to read collection config from snapshot: {exc}") from exc
    if manifest.get("format") != FORMAT or manifest.get("vector_dtype") != "float32-le":
        raise SnapshotReadError(f"Unknown snapshot point format: {manifest.get('format')!r}")
    raw = members["0/points/vectors.f32"]
    count, dim = manifest.get("count"), manifest.get("dim")
    if (
        dim != vectors_config["size"]
        or not isinstance(ids, list)
        or not isinstance(payloads, list)
        or count != len(ids)
        or count != len(payloads)
        or len(raw) != count * dim * 4
    ):
        raise SnapshotReadError("Snapshot point data does not match its manifest (truncated or corrupt)")
    return config, PointsData(ids, vectors_from_le_bytes(raw), payloads)
