"""``type: command``: deploy by running a program (kubectl, a deploy script) from argv templates with
``{version}``, ``{image}``, ``{digest}``, ``{incident}``; never a shell. Health by HTTP URL.

``current_argv`` (optional) prints the running version on stdout: with it, a deploy of the version
that already runs is a no-op; without it the step's journal is what keeps a deploy from repeating.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from rollbackd import childenv, procs
from rollbackd.config import Duration
from rollbackd.deploy import DeployedRelease, DeployOptions, RedeployByUrl, release_values, render
from rollbackd.errors import BackendError
from rollbackd.records import JSON, Release


async def run_argv(argv: list[str], *, timeout: float, env: dict[str, str], what: str) -> str:
    """Run argv (no shell) in its own process group (rollbackd.procs): a timeout kills the whole group,
    grandchildren included. stdout on success, else BackendError with the exit status and stderr tail."""
    try:
        done = await procs.run(argv, env=childenv.build(env), timeout=timeout)
    except TimeoutError as exc:
        raise BackendError(what, f"{argv[0]} timed out after {timeout:g}s", retryable=True) from exc
    except OSError as exc:
        raise BackendError(what, f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
    if done.code != 0:
        tail = done.err.decode(errors="replace").strip()[-500:]
        raise BackendError(what, f"{argv[0]} exited {done.code}: {tail}")
    return done.out.decode(errors="replace")


class CommandDeployer(RedeployByUrl):
    backend = "deploy command"

    class Options(DeployOptions):
        argv: Annotated[list[str], Field(min_length=1)]
        current_argv: list[str] | None = None
        timeout: Duration = 600.0
        env: dict[str, str] = {}

    def __init__(self, options: Options) -> None:
        self.options = options

    async def current(self) -> DeployedRelease:
        if not self.options.current_argv:
            return DeployedRelease(version=None)
        out = await run_argv(
            self.options.current_argv,
            timeout=self.options.timeout,
            env=self.options.env,
            what="deploy command (current)",
        )
        return DeployedRelease(version=out.strip() or None)

    async def deploy(self, release: Release, *, incident: str) -> JSON:
        current = await self.current()
        if current.version is not None and current.matches(release):
            return {"noop": True, "version": release.version}
        argv = render(self.options.argv, release_values(release, incident))
        out = await run_argv(argv, timeout=self.options.timeout, env=self.options.env, what="deploy command")
        return {"noop": False, "version": release.version, "argv": argv, "stdout": out[-1000:]}
