"""``type: command``: ``get_argv`` prints the weight; ``set_argv`` (with ``{weight}``) sets it. No shell."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from rollbackd.config import Duration
from rollbackd.deploy.command import run_argv
from rollbackd.traffic import TrafficOptions, check_weight


class CommandTrafficSwitch:
    kind = "command"

    class Options(TrafficOptions):
        get_argv: Annotated[list[str], Field(min_length=1)]
        set_argv: Annotated[list[str], Field(min_length=1)]
        timeout: Duration = 30.0
        env: dict[str, str] = {}

    def __init__(self, options: Options) -> None:
        self.options = options

    async def weight(self) -> int:
        out = await run_argv(
            self.options.get_argv, timeout=self.options.timeout, env=self.options.env, what="traffic command"
        )
        return check_weight(out, "traffic command")

    async def set_weight(self, percent: int) -> None:
        argv = [a.replace("{weight}", str(percent)) for a in self.options.set_argv]
        await run_argv(argv, timeout=self.options.timeout, env=self.options.env, what="traffic command")
