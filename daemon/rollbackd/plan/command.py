"""`type: command`: run a program (argv, never a shell). Alert and incident fields reach it as
ROLLBACKD_* environment variables, so a label can never become code. ``check`` is an optional argv
whose exit 0 means the step's effect is already there (used on resume)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from rollbackd import childenv, procs
from rollbackd.errors import FatalError, RetryableError
from rollbackd.plan import BaseStep, StepContext, StepOptions
from rollbackd.records import JSON

_TAIL = 4000


class CommandOptions(StepOptions):
    argv: Annotated[list[str], Field(min_length=1)]
    check: list[str] | None = None
    env: dict[str, str] = {}
    cwd: str | None = None
    ok_codes: list[int] = [0]


async def run_argv(
    argv: list[str], *, env: dict[str, str], cwd: str | None, timeout: float | None = None
) -> tuple[int, str, str]:
    """Run argv to completion in its own process group (rollbackd.procs); returns (exit code, stdout
    tail, stderr tail). A timeout, an abort or a stop of the daemon kills the whole group."""
    try:
        done = await procs.run(argv, env=env, cwd=cwd, timeout=timeout, keep=_TAIL * 4)
    except FileNotFoundError as exc:
        raise FatalError(f"{argv[0]}: no such program") from exc
    except PermissionError as exc:
        raise FatalError(f"{argv[0]}: permission denied") from exc
    return done.code, _tail(done.out), _tail(done.err)


def _tail(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")[-_TAIL:]


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
        code, _, _ = await run_argv(
            self.options.check, env=self._env(ctx), cwd=self.options.cwd, timeout=self.spec.timeout
        )
        return code == 0

    async def run(self, ctx: StepContext) -> JSON:
        code, out, err = await run_argv(self.options.argv, env=self._env(ctx), cwd=self.options.cwd)
        result: dict[str, Any] = {
            "exit_code": code,
            "stdout": out,
            "stderr": err,
            "labels_skipped": childenv.label_vars(ctx.incident.trigger.labels)[1],
        }
        if code not in self.options.ok_codes:
            last = (err or out).strip().splitlines()[-1:] or [""]
            raise RetryableError(f"{self.options.argv[0]} exited {code}: {last[0][:300]}")
        return result
