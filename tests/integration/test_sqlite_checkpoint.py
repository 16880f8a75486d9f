"""The SQLite journal's WAL is copied back by a background checkpointer, not inside commits: commits
no longer checkpoint at SQLite's default 1,000 pages, the checkpointer catches up with everything
written, the commits' backstop still bounds the WAL when the checkpointer is stopped, and closing
the store stops its thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from rollbackd.state import checkpoint, sqlite
from rollbackd.state.sqlite import SqliteStateStore

ROW = "x" * 3000  # about one page a row


async def opened(tmp_path: Path) -> SqliteStateStore:
    store = SqliteStateStore(SqliteStateStore.Options(path=str(tmp_path / "state.db")))
    await store.open()
    return store


async def write(store: SqliteStateStore, rows: int, tag: str) -> None:
    for n in range(rows):  # one commit each
        await store._execute("INSERT INTO rb_kv (key, value) VALUES ($1, $2)", f"{tag}{n}", ROW)


def wal_pages(tmp_path: Path) -> float:
    return (tmp_path / "state.db-wal").stat().st_size / 4096


def checkpointer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rollbackd-sqlite-checkpoint"]


async def test_the_checkpointer_copies_back_everything_written(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == checkpoint.BACKSTOP_PAGES
        await write(store, 300, "a")
        ckpt = store.checkpointer
        assert ckpt is not None
        for _ in range(100):  # it runs every 0.2 s
            if ckpt.last is not None and ckpt.last[1] > 0 and ckpt.last[1] == ckpt.last[2]:
                break
            await asyncio.sleep(0.05)
        assert ckpt.last is not None and ckpt.last[1] == ckpt.last[2] > 0, ckpt.last
    finally:
        await store.close()
    assert not checkpointer_threads()


async def test_commits_no_longer_checkpoint_at_a_thousand_pages(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        assert store.checkpointer is not None
        store.checkpointer.stop()  # as if its process were stopped: only commits could checkpoint now
        await write(store, 1600, "b")
        assert wal_pages(tmp_path) > 1200  # SQLite's default would have reset the WAL at 1,000 pages
        assert dict(store.conn.execute("SELECT count(*) AS n FROM rb_kv").fetchone())["n"] == 1600
    finally:
        await store.close()


async def test_the_backstop_bounds_the_wal_when_the_checkpointer_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "BACKSTOP_PAGES", 200)
    store = await opened(tmp_path)
    try:
        assert store.checkpointer is not None
        store.checkpointer.stop()
        await write(store, 1200, "c")
        assert wal_pages(tmp_path) < 400  # reset and reused past 200 pages, never grown to 1,200
    finally:
        await store.close()
