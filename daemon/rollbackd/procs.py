"""Child processes in a process group of their own: the one way rollbackd runs a program.

    result = await procs.run(argv, env=env, cwd=None, timeout=30)   # Completed(code, out, err, pgid)

- The child starts a new session (``setsid``): it and every process it forks share one process
  group, so a timeout, an abort or a daemon stop kills the whole group (SIGTERM, then SIGKILL after
  ``grace``), not just the direct child while a grandchild goes on.
- Output goes to unlinked temporary files, never pipes: a grandchild that keeps stdout open cannot
  hold up the end of a step (asyncio waits for pipes to close before ``wait()`` returns).
- Die with the parent, race-free: ``PR_SET_PDEATHSIG`` is set in the child after fork, then the
  child checks that its parent is still the daemon (it may have died in between) and exits if not.
- ``SpawnHook`` (a contextvar set by the step executor) is told each group id as soon as the
  process runs, and stamps the child's environment with a marker that every descendant inherits, so a
  restarted daemon can find and kill what a crashed one left behind (``kill_marked``), and only that.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MARKER_ENV = "ROLLBACKD_RUN"
DEFAULT_GRACE_S = 2.0
_PR_SET_PDEATHSIG = 1
_EXIT_ORPHANED = 125
try:  # resolved in the parent: the child must not load libraries between fork and exec
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: no die-with-parent, the group kill still applies
    _prctl = None


@dataclass(frozen=True)
class Completed:
    code: int
    out: bytes
    err: bytes
    pgid: int


@dataclass(frozen=True)
class SpawnHook:
    """Who wants to know about processes started in this context (the step executor)."""

    marker: str  # e.g. "<incident>/<step index>": stamped into the child's environment
    started: Callable[[int, str], Awaitable[None]]  # (pgid, program) once the process runs
    grace: float = DEFAULT_GRACE_S  # SIGTERM to SIGKILL when the group is stopped


spawn_hook: contextvars.ContextVar[SpawnHook | None] = contextvars.ContextVar("spawn_hook", default=None)


def _child_setup(parent: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec: no imports, no allocation-heavy work
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the daemon died before the setting took effect
            os._exit(_EXIT_ORPHANED)

    return setup


async def run(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str | None = None,
    timeout: float | None = None,
    grace: float | None = None,
    keep: int = 1 << 20,
) -> Completed:
    """Run argv to completion in its own process group; the last ``keep`` bytes of stdout and stderr.
    Raises TimeoutError after ``timeout`` (the group killed first), FileNotFoundError/PermissionError
    when argv[0] cannot be run; on cancellation the group is killed before CancelledError goes on."""
    hook = spawn_hook.get()
    if hook is not None:
        env = {**env, MARKER_ENV: hook.marker}
    if grace is None:
        grace = hook.grace if hook is not None else DEFAULT_GRACE_S
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_child_setup(os.getpid()),
        )

        async def finish() -> int:
            if hook is not None:  # the group id is journaled before anything else waits on the process
                await hook.started(proc.pid, argv[0])
            return await proc.wait()

        # Not wait_for: a cancelled wait_for waits for its work to finish cancelling, and a journal
        # write on a blackholed store link takes its whole timeout to do so; the group dies first.
        work = asyncio.ensure_future(finish())
        try:
            done, _ = await asyncio.wait({work}, timeout=timeout)
            if not done:
                raise TimeoutError
            code = work.result()  # the hook's error, if its journal write failed
        except BaseException:
            await terminate_group(proc.pid, grace, proc)
            work.cancel()  # a no-op once it is done
            work.add_done_callback(_retrieve)  # its end may come later, or went unread: nobody waits for it
            raise
        return Completed(code, _tail(out, keep), _tail(err, keep), proc.pid)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _tail(file: IO[bytes], keep: int) -> bytes:
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - keep))
    return file.read()


async def terminate_group(pgid: int, grace: float, proc: asyncio.subprocess.Process | None = None) -> None:
    """SIGTERM the group, SIGKILL whatever is left of it after ``grace`` seconds; reaps ``proc``."""
    _killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    if proc is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    while _group_alive(pgid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    _killpg(pgid, signal.SIGKILL)
    if proc is not None:
        await proc.wait()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _pids(proc_root: Path) -> Iterable[str]:
    try:
        return [name for name in os.listdir(proc_root) if name.isdigit()]
    except OSError:
        return []


async def kill_marked(marker: str, grace: float = DEFAULT_GRACE_S) -> list[int]:
    """Make sure what a crashed daemon left of a step is gone: every process of this host carrying ``marker``
    (its direct child dies with the daemon, a grandchild does not), whatever its group, journaled or not (a
    daemon killed between the spawn and that journal line leaves one no journaled group names): TERM, then
    KILL after ``grace``. Returns every pid found alive (by any of its scans)."""
    return await _kill_until_gone(lambda: marked(marker), grace)


def marked(marker: str, proc_root: Path = Path("/proc")) -> list[int]:
    wanted = f"{MARKER_ENV}={marker}".encode()
    found: list[int] = []
    for entry in _pids(proc_root):
        try:
            if wanted in (proc_root / entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry))
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return [pid for pid in found if pid != os.getpid()]


async def _kill_until_gone(find: Callable[[], list[int]], grace: float) -> list[int]:
    # Each pass TERMs what it finds that no pass found before: a process can be missed by one scan
    # (its environ reads empty while it execs) or appear after it (a fork under way).
    seen: list[int] = []

    def term_new() -> list[int]:
        found = find()
        for pid in found:
            if pid not in seen:
                seen.append(pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
        return found

    if not term_new():
        return []
    deadline = time.monotonic() + grace
    while term_new() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for pid in find():
        if pid not in seen:
            seen.append(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while find() and time.monotonic() < deadline:  # SIGKILL takes a moment to land
        await asyncio.sleep(0.01)
    return seen
