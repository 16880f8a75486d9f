"""Keep the test server's collections and aliases across a graceful restart (saved on shutdown).

Each collection is written in the snapshot format under `<storage>/storage/collections/`; aliases go to
`<storage>/storage/aliases.json` (Qdrant's alias mapping is a JSON map too). A killed server (SIGKILL)
loses what changed since it started, unlike a real Qdrant with its WAL.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from .snapshots import read_snapshot, write_snapshot
from .storage import Collection, PointsData, Store


def peer_id(storage_dir: Path) -> int:
    path = storage_dir / "peer_id"
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        value = random.randrange(1, 2**53)
        storage_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(str(value))
        return value


def save(
    store_data: dict[str, tuple[dict[str, Any], PointsData]], aliases: dict[str, str], data_dir: Path, temp_dir: Path
) -> None:
    target = data_dir / "collections"
    fresh = data_dir / "collections.new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    for name, (config, points) in store_data.items():
        write_snapshot(temp_dir, fresh / f"c-{quote(name, safe='')}.snapshot", config, points)
    shutil.rmtree(target, ignore_errors=True)
    fresh.rename(target)
    (data_dir / "aliases.json").write_text(json.dumps(aliases))


def load(store: Store, data_dir: Path) -> None:
    directory = data_dir / "collections"
    if directory.is_dir():
        for path in sorted(directory.glob("c-*.snapshot")):
            name = unquote(path.name[2 : -len(".snapshot")])
            config, points = read_snapshot(path)
            store.collections[name] = Collection(name, config, points)
    aliases = data_dir / "aliases.json"
    if aliases.is_file():
        store.aliases = {k: v for k, v in json.loads(aliases.read_text()).items() if v in store.collections}
