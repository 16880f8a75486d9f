"""The snapshot store on the local filesystem: a directory per snapshot set, written atomically.

    <dir>/<set id>/manifest.json     immutable: service, time, release, per-store manifests, sha256 of every file
    <dir>/<set id>/state.json        verification result (re-written by `verify`)
    <dir>/<set id>/<store>/...       what each Snapshotter wrote (a pg_dump directory, a Qdrant snapshot)

A set is built under ``<dir>/.tmp-<id>`` and renamed into place only when every file is written and
hashed, so a half-written set is never listed or used; leftovers of a crash are swept by ``sweep``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rollbackd.errors import FatalError, NotFoundError
from rollbackd.snapshots import JSON, SAFETY, SnapshotSet

MANIFEST = "manifest.json"
STATE = "state.json"
TMP_PREFIX = ".tmp-"
LOCK_PREFIX = ".lock"  # + the temporary directory's name: flock'ed by its writer
_CHUNK = 1 << 20


def new_set_id(ts: float | None = None) -> str:
    """Sortable and short (it ends up in database names, 63 bytes at most): ``20261122_031502_a1``."""
    stamp = datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).strftime("%Y%m%d_%H%M%S")
    return f"{stamp}_{secrets.token_hex(1)}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (except the set's own json files), by relative path."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in (MANIFEST, STATE):
            out[rel] = sha256_file(path)
    return out


def fs_error(exc: OSError, root: Path) -> FatalError:
    """A file-system failure of the snapshot store, naming the path and the errno (a read-only or full
    snapshot directory must be a clear refusal, not a bare 500)."""
    code = errno.errorcode.get(exc.errno or 0, "?")
    return FatalError(
        f"snapshot directory {root}: {exc.strerror or type(exc).__name__} ({code}, errno {exc.errno})"
        f" at {exc.filename or root}"
    )


def _kind_of(reason: str) -> str:
    """The kind of a set written before manifests recorded it, from the reason rollbackd wrote."""
    if reason.startswith("safety snapshot"):
        return SAFETY
    return "scheduled" if reason == "scheduled" else "manual"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotStore:
    def __init__(self, root: Path, service: str) -> None:
        self.root = root
        self.service = service
        self._held: dict[str, int] = {}  # temporary directory name -> its lock file, flock'ed while written

    # ---- writing ----------------------------------------------------------------------------------
    def begin(self, set_id: str) -> Path:
        """Claim ``set_id`` by creating its temporary directory; the exclusive mkdir is the claim, so two writers,
        in one process or two, never share an id (FileExistsError if the set or its directory exists)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.root / set_id).exists():
            raise FileExistsError(f"snapshot set {set_id} exists")
        tmp = self.root / f"{TMP_PREFIX}{set_id}"
        # the lock first, then the directory: a sweep (any process, any replica sharing the directory)
        # that finds the directory finds it held until the set is committed or aborted
        fd = os.open(self._lock_path(tmp.name), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tmp.mkdir()
        except BlockingIOError as exc:
            os.close(fd)
            raise FileExistsError(f"snapshot set {set_id} is being written") from exc
        except BaseException:
            os.close(fd)
            raise
        self._held[tmp.name] = fd
        return tmp

    def reserve(self, created_at: float, attempts: int = 64) -> tuple[str, Path]:
        """A new set id and its claimed temporary directory, unique even for sets made in the same second (a
        safety snapshot right after a manual one)."""
        for _ in range(attempts):
            set_id = new_set_id(created_at)
            try:
                return set_id, self.begin(set_id)
            except FileExistsError:
                continue
        raise FileExistsError(f"no free snapshot set id in {self.root} after {attempts} attempts")

    def commit(
        self,
        tmp: Path,
        set_id: str,
        *,
        created_at: float,
        release: str | None,
        reason: str,
        manifests: dict[str, JSON],
        kind: str = "manual",
    ) -> SnapshotSet:
        """Hash every file, write the manifest, rename the set into place (atomic)."""
        files = hash_tree(tmp)
        size = sum((tmp / rel).stat().st_size for rel in files)
        manifest = {
            "id": set_id,
            "service": self.service,
            "created_at": created_at,
            "release": release,
            "reason": reason,
            "kind": kind,
            "stores": manifests,
            "files": files,
            "size_bytes": size,
            "format": 1,
        }
        _write_json(tmp / MANIFEST, manifest)
        _write_json(tmp / STATE, {"verified": True, "verified_at": time.time(), "error": None})
        final = self.root / set_id
        if final.exists():
            raise FileExistsError(f"snapshot set {set_id} exists")
        os.rename(tmp, final)
        _fsync_dir(self.root)
        self._release(tmp.name)
        return self._read(final)

    def abort(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        self._release(tmp.name)

    def _lock_path(self, name: str) -> Path:
        return self.root / f"{LOCK_PREFIX}{name}"

    def _release(self, name: str) -> None:
        fd = self._held.pop(name, None)
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path(name))
            os.close(fd)

    def _being_written(self, name: str) -> bool:
        """Whether a writer (this process or another, on any host sharing the directory) holds ``name``."""
        if name in self._held:
            return True
        try:
            fd = os.open(self._lock_path(name), os.O_RDWR)
        except FileNotFoundError:
            return False  # no writer: a crash's, or a set being deleted (its own rmtree runs too)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._lock_path(name))  # its writer is gone
        return False

    def sweep(self) -> list[str]:
        """Remove temporary directories left by an interrupted snapshot: never one a writer still holds
        (a snapshot under way in another process or on another replica sharing the directory)."""
        if not self.root.is_dir():
            return []
        gone = [
            p.name for p in self.root.iterdir() if p.name.startswith(TMP_PREFIX) and not self._being_written(p.name)
        ]
        for name in gone:
            shutil.rmtree(self.root / name, ignore_errors=True)
        for lock in self.root.glob(f"{LOCK_PREFIX}*"):  # a writer's lock whose directory never came
            name = lock.name.removeprefix(LOCK_PREFIX)
            if not (self.root / name).exists():
                self._being_written(name)
        return gone

    # ---- reading ----------------------------------------------------------------------------------
    def _read(self, path: Path) -> SnapshotSet:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        try:
            state = json.loads((path / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {"verified": False}
        return SnapshotSet(
            id=manifest["id"],
            service=manifest["service"],
            created_at=manifest["created_at"],
            release=manifest.get("release"),
            verified=bool(state.get("verified")),
            manifests=manifest["stores"],
            reason=manifest.get("reason", ""),
            path=path,
            size_bytes=int(manifest.get("size_bytes", 0)),
            files=manifest.get("files", {}),
            kind=manifest.get("kind") or _kind_of(manifest.get("reason", "")),
        )

    def list(self) -> list[SnapshotSet]:
        """Every complete set, newest first (a set without a readable manifest is not listed)."""
        if not self.root.is_dir():
            return []
        out: list[SnapshotSet] = []
        for path in self.root.iterdir():
            if path.name.startswith(".") or not (path / MANIFEST).is_file():
                continue
            with contextlib.suppress(OSError, ValueError, KeyError):
                out.append(self._read(path))
        return sorted(out, key=lambda s: (s.created_at, s.id), reverse=True)

    def get(self, set_id: str) -> SnapshotSet:
        if "/" in set_id or set_id.startswith(".") or not (self.root / set_id / MANIFEST).is_file():
            raise NotFoundError(f"no snapshot set {set_id!r} of service {self.service}")
        return self._read(self.root / set_id)

    # ---- verify and delete ------------------------------------------------------------------------
    def verify(self, set_id: str) -> JSON:
        """Re-hash every file against the manifest; records and returns the result."""
        snap = self.get(set_id)
        assert snap.path is not None
        actual = hash_tree(snap.path)
        problems = [f"{rel}: missing" for rel in snap.files if rel not in actual]
        problems += [
            f"{rel}: sha256 mismatch" for rel, digest in snap.files.items() if rel in actual and actual[rel] != digest
        ]
        problems += [f"{rel}: not in the manifest" for rel in actual if rel not in snap.files]
        result = {
            "verified": not problems,
            "verified_at": time.time(),
            "error": "; ".join(problems[:5]) or None,
            "files": len(snap.files),
        }
        _write_json(snap.path / STATE, result)
        return {"id": set_id, **result}

    def delete(self, set_id: str) -> None:
        snap = self.get(set_id)
        assert snap.path is not None
        trash = self.root / f"{TMP_PREFIX}del-{set_id}"
        os.rename(snap.path, trash)  # unlisted at once, then removed
        shutil.rmtree(trash, ignore_errors=True)

    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free
