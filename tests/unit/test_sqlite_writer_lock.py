"""The SQLite journal's writer lock, taken by every process of one journal around its writes: one
holder at a time, and a holder that never lets go (a stopped process) stalls nobody past the patience,
after which SQLite's own busy timeout decides."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rollbackd.state.sqlite import WriterLock

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_one_process_holds_it_and_a_waiter_gives_up_after_its_patience(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db-writer.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lock, taken = WriterLock(path), []
        waiter = threading.Thread(target=lambda: taken.append(lock._take(0.2)))
        waiter.start()
        waiter.join(10)
        assert not waiter.is_alive() and taken == [False]  # not held, and not stuck behind the holder
    finally:
        holder.communicate("")  # the holder exits: its lock goes with it
    assert lock._take(0.2) is True
    with lock.held(0.2):  # released after the block: another process takes it at once
        pass
    assert (
        subprocess.run([sys.executable, "-c", HOLD, path], input="", capture_output=True, text=True, timeout=10).stdout
        == "held\n"
    )
    lock.close()


def test_an_in_memory_journal_has_no_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from rollbackd.state.sqlite import SqliteStateStore

    async def main() -> None:
        store = SqliteStateStore(SqliteStateStore.Options(path=":memory:"))
        await store.open()
        await store.set_kv("k", "v")
        await store.close()

    monkeypatch.chdir(tmp_path)  # a lock file named after ":memory:" would land here
    asyncio.run(main())
    assert list(tmp_path.iterdir()) == []
