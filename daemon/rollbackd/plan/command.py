"""`type: command`: run a program (argv, never a shell). Alert and incident fields reach it as
ROLLBACKD_* environment variables, so a label can never become code. ``check`` is an optional argv
whose exit 0 means the step's effect is already there (used on resume)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
from typing import Annotated, Any, ClassVar

from pydantic import Field

from rollbackd import childenv
from rollbackd.errors import FatalError, RetryableError
from rollbackd.plan import BaseStep, StepContext, StepOptions
from rollbackd.records import JSON

_TAIL = 4000
_PR_SET_PDEATHSIG = 1


class CommandOptions(StepOptions):
    argv: Annotated[list[str], Field(min_length=1)]
    check: list[str] | None = None
    env: dict[str, str] = {}
    cwd: str | None = None
    ok_codes: list[int] = [0]


def _die_with_parent() -> None:
    # If rollbackd is killed (kill -9), its children die too: a resumed incident re-runs the step
    # instead of racing a leftover copy of it.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def run_argv(
    argv: list[str], *, env: dict[str, str], cwd: str | None, timeout: float | None = None
) -> tuple[int, str, str]:
    """Run argv to completion; returns (exit code, stdout tail, stderr tail). Kills it on cancel."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )
    except FileNotFoundError as exc:
        raise FatalError(f"{argv[0]}: no such program") from exc
    except PermissionError as exc:
        raise FatalError(f"{argv[0]}: permission denied") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, _tail(out), _tail(err)


def _tail(data: bytes) -> str:
    return data[-_TAIL:].decode("utf-8", errors="replace")


class CommandStep(BaseStep):
    type: ClassVar[str] = "command"
    Options = CommandOptions
    options: CommandOptions

    def describe(self) -> str:
        return "run " + " ".join(self.options.argv)

    def _env(self, ctx: StepContext) -> dict[str, str]:
        return childenv.build(self.options.env, ctx.env())

    async def is_done(self, ctx: StepContext) -> bool:
        if not self.options.check:
            return False
        code, _, _ = await run_argv(self.options.check, env=self._env(ctx), cwd=self.options.cwd,
                                    timeout=self.spec.timeout)
        return code == 0

    async def run(self, ctx: StepContext) -> JSON:
        code, out, err = await run_argv(self.options.argv, env=self._env(ctx), cwd=self.options.cwd)
        result: dict[str, Any] = {"exit_code": code, "stdout": out, "stderr": err,
                                  "labels_skipped": childenv.label_vars(ctx.incident.trigger.labels)[1]}
        if code not in self.options.ok_codes:
            last = (err or out).strip().splitlines()[-1:] or [""]
            raise RetryableError(f"{self.options.argv[0]} exited {code}: {last[0][:300]}")
        return result
