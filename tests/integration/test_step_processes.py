"""Steps own a process group (rollbackd.procs): a timeout kills the whole group even when a grandchild
holds the output pipe, the command deploy/traffic backends do the same, the die-with-parent setting is
race-free, and a daemon killed within milliseconds of a step's start leaves no step process behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from rollbackd import procs
from rollbackd.deploy.command import run_argv as backend_run_argv
from rollbackd.errors import BackendError
from tests.integration.test_runner import only_incident, webhook
from tests.support.daemon import DaemonProcess, command_service, running_daemon, write_config


def processes_with(needle: str) -> list[int]:
    """Live processes whose command line or environment contains ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":
                continue
            blob = Path(f"/proc/{entry}/cmdline").read_bytes() + Path(f"/proc/{entry}/environ").read_bytes()
        except (OSError, ValueError):
            continue
        if needle.encode() in blob:
            found.append(int(entry))
    return found


def unique_sleep() -> str:
    return f"20.{random.randrange(10**8):08d}"  # a command line no other process has


async def test_timeout_kills_the_group_even_when_a_grandchild_holds_the_pipe(
    tmp_path: Path, firing_payload: dict[str, Any]
) -> None:
    sleep = unique_sleep()
    plan = [{"type": "command", "name": "hangs", "argv": ["/bin/sh", "-c", f"sleep {sleep}; true"], "timeout": "2s"}]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)}, incidents={"kill_grace": "1s"})
    async with running_daemon(cfg) as d:
        began = time.monotonic()
        await webhook(d, firing_payload)
        incident, (step,) = await only_incident(d)
        took = time.monotonic() - began
    assert incident.state.value == "failed" and step.error == "timed out after 2s"
    assert took < 10, took  # liveness: the timeout holds, not the grandchild's 20 s
    assert processes_with(f"sleep {sleep}") == []


async def test_command_backends_kill_their_whole_group_at_timeout() -> None:
    """The `command` deploy and traffic backends (traffic uses the deploy backend's runner)."""
    sleep = unique_sleep()
    began = time.monotonic()
    with pytest.raises(BackendError) as failed:
        await backend_run_argv(["/bin/sh", "-c", f"sleep {sleep}; true"], timeout=1.0, env={}, what="deploy command")
    assert failed.value.retryable and "timed out after 1s" in str(failed.value)
    assert time.monotonic() - began < 10
    assert processes_with(f"sleep {sleep}") == []


def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    """The race: the daemon dies between fork and PR_SET_PDEATHSIG. The child checks its parent after
    setting it; here the expected parent is not its parent, exactly what it sees in that race."""
    began = time.monotonic()
    done = subprocess.run(["/bin/sleep", "30"], preexec_fn=procs._child_setup(os.getpid() + 10**6), check=False)
    assert done.returncode == 125 and time.monotonic() - began < 10
    ok = subprocess.run(["/bin/true"], preexec_fn=procs._child_setup(os.getpid()), check=False)
    assert ok.returncode == 0


async def test_output_and_group_id_come_back() -> None:
    done = await procs.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], env={"PATH": "/usr/bin:/bin"})
    assert (done.code, done.out, done.err) == (3, b"out\n", b"err\n")
    assert done.pgid > 0
    with pytest.raises(ProcessLookupError):  # no member of its group is left
        os.killpg(done.pgid, 0)


def test_kill9_within_milliseconds_of_a_step_start_leaves_no_step_process(tmp_path: Path) -> None:
    """Every start of the daemon resumes the step (it sleeps); each is killed 0-25 ms after the daemon
    is ready, i.e. around the moment it forks the step. No process of the step may outlive the daemon."""
    spawned = tmp_path / "spawned"
    plan = [
        {
            "type": "command",
            "name": "sleeps",
            "crash_resumes": 100,
            "argv": ["/bin/sh", "-c", f"echo $$ >> {spawned}; exec sleep 30"],
        }
    ]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    daemon = DaemonProcess(cfg)
    survivors: list[tuple[int, list[int]]] = []
    rng = random.Random(secrets.randbits(32))
    marker = f"{procs.MARKER_ENV}={tmp_path}"  # replaced by the incident's marker once it exists
    try:
        daemon.start()
        status, body = daemon.api.call("POST", "/v1/trigger", {"reason": "test: kill loop", "service": "rag"})
        assert status == 202, body
        marker = f"{procs.MARKER_ENV}={body['id']}/0"
        for round_ in range(20):
            time.sleep(rng.uniform(0, 0.025))
            daemon.kill9()
            deadline = time.monotonic() + 2
            while (left := processes_with(marker)) and time.monotonic() < deadline:
                time.sleep(0.02)
            if left:
                survivors.append((round_, left))
            daemon.start()
        time.sleep(0.3)
        (step,) = daemon.api.call("GET", f"/v1/incidents/{body['id']}")[1]["steps"]
        assert step["attempts"] == 1  # 20 attempts cut short by kills, none counted as a failed attempt
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill9()
        for pid in processes_with(marker):  # never leave a sleeper behind, whatever the outcome
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert survivors == []
    assert spawned.exists() and len(spawned.read_text().split()) >= 5  # the kills did land around the forks


def test_a_grandchild_left_by_a_kill_before_its_group_was_journaled_never_races_the_resumed_step(
    tmp_path: Path,
) -> None:
    """The step's shell dies with the daemon, its `sleep` does not and holds the step's lock. Killed 0-25 ms
    after each start, the daemon sometimes dies between the spawn and the journal line naming the group:
    the next start must still find that sleeper (by its marker) and kill it before the step runs again."""
    root = tmp_path / "runs"
    root.mkdir()
    script = (
        f"echo $$ >> {root}/spawned; exec 9>{root}/lock; "
        f'flock -n 9 || {{ echo "$ROLLBACKD_ATTEMPT" >> {root}/concurrent; exit 1; }}; sleep 30; true'
    )
    plan = [{"type": "command", "name": "locks", "crash_resumes": 100, "argv": ["/bin/sh", "-c", script]}]
    daemon = DaemonProcess(write_config(tmp_path, services={"rag": command_service(plan)}))
    rng = random.Random(secrets.randbits(32))
    marker = f"{procs.MARKER_ENV}={tmp_path}"
    try:
        daemon.start()
        status, body = daemon.api.call("POST", "/v1/trigger", {"reason": "test: kill loop", "service": "rag"})
        assert status == 202, body
        marker = f"{procs.MARKER_ENV}={body['id']}/0"
        for _ in range(15):
            time.sleep(rng.uniform(0, 0.025))
            daemon.kill9()
            daemon.start()
        deadline = time.monotonic() + 10  # the last start's attempt holds the lock: it started
        while len((root / "spawned").read_text().split()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill9()
        for pid in processes_with(marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert not (root / "concurrent").exists(), (root / "concurrent").read_text()
    assert len((root / "spawned").read_text().split()) >= 5  # the kills did land around the forks


def test_kill_marked_finds_a_marked_process_in_any_group() -> None:
    """What the resume uses when no journaled group names the leftover: the marker alone."""
    sleep = unique_sleep()
    marker = f"test-{random.randrange(10**9)}/0"
    env = {"PATH": "/usr/bin:/bin", procs.MARKER_ENV: marker}
    shell = subprocess.Popen(["/bin/sh", "-c", f"sleep {sleep} & wait"], env=env, start_new_session=True)
    bystander = subprocess.Popen(["sleep", sleep], env={"PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 5
        while len(procs.marked(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(procs.marked(marker)) == 2  # the shell and its sleep
        killed = asyncio.run(procs.kill_marked(marker, grace=1.0))
        assert shell.pid in killed and len(killed) == 2
        shell.wait(5)
        assert procs.marked(marker) == [] and bystander.poll() is None  # only what carries the marker
    finally:
        for proc in (bystander, shell):  # reaped even when an assertion failed: no warning in a later test
            proc.kill()
            proc.wait()


async def test_a_group_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    sleep = unique_sleep()
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        await procs.run(
            ["/bin/sh", "-c", f"trap '' TERM; sleep {sleep} & wait"],
            env={"PATH": "/usr/bin:/bin"},
            timeout=0.5,
            grace=0.5,
        )
    assert time.monotonic() - began < 10
    assert processes_with(f"sleep {sleep}") == []  # SIGTERM was ignored (inherited), SIGKILL was not


async def test_a_cancelled_step_kills_its_group_while_the_pgid_journal_write_hangs() -> None:
    """A leader that steps down cancels its step while the step's group id is being journaled on a
    blackholed store link (whose cancellation takes the link's whole timeout): the group dies within
    the grace, not when the journal write gives up."""
    sleep = unique_sleep()
    link_timeout = asyncio.Event()
    writing = asyncio.Event()

    async def journal_pgid(pgid: int, program: str) -> None:
        writing.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await link_timeout.wait()  # like asyncpg's ROLLBACK on a dead link: cancelling waits for it
            raise

    procs.spawn_hook.set(procs.SpawnHook(marker=f"test-{secrets.token_hex(4)}/0", started=journal_pgid, grace=0.5))
    step = asyncio.create_task(procs.run(["sleep", sleep], env={"PATH": "/usr/bin:/bin"}))
    await asyncio.wait_for(writing.wait(), 10)
    assert len(processes_with(sleep)) == 1
    began = time.monotonic()
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(step, 10)
    assert time.monotonic() - began < 5 and processes_with(sleep) == []  # not left running for the journal
    link_timeout.set()
    await asyncio.sleep(0.05)  # the abandoned journal write ends its cancellation in the background
