"""The daemon's side: start the acceptors on its listening socket, take their reports, start again one
that exits unasked, stop them before the daemon stops serving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from rollbackd.acceptor import channel
from rollbackd.wiring import Core

log = logging.getLogger(__name__)

STOP_S = 15.0  # an acceptor drains for up to worker.DRAIN_S after SIGTERM
START_S = 15.0  # the daemon's start waits this long for its acceptors to serve, then goes on without
_STABLE_S = 60.0  # an acceptor that ran this long exited for a new reason: the backoff starts again


class Acceptors:
    def __init__(self, core: Core, host: str, port: int, count: int) -> None:
        self.core = core
        self.host = host
        self.port = port
        self.count = count
        self.stopping = False
        self._stopped = asyncio.Event()
        self._dir: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._serving: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(count)}

    async def start(self, runner: web.AppRunner) -> None:
        """Serve the daemon's app on a private unix socket too (handed-off requests), then start them."""
        self._dir = tempfile.mkdtemp(prefix="rollbackd-")  # mode 0700: only this user reaches the socket
        path = str(Path(self._dir) / "daemon.sock")
        await web.UnixSite(runner, path).start()
        os.chmod(path, 0o600)
        self._tasks = [
            asyncio.create_task(self._keep(i, path), name=f"rollbackd-acceptor-{i}") for i in range(self.count)
        ]
        waits = [asyncio.create_task(serving.wait()) for serving in self._serving.values()]
        _, late = await asyncio.wait(waits, timeout=START_S)
        for wait in late:
            wait.cancel()
        if late:  # the daemon serves alone meanwhile; the acceptor joins when it can
            log.error("acceptors_late", extra={"late": len(late), "after_s": START_S})

    async def _keep(self, index: int, path: str) -> None:
        delay = 0.5
        while not self.stopping:
            began = time.monotonic()
            try:
                code = await self._run(index, path)
            except Exception:  # could not start it (no fork, no memory): the same backoff as a crash
                log.exception("acceptor_start_failed", extra={"acceptor": index})
                code = -1
            if self.stopping:
                return
            self.core.metrics.acceptor_exits.inc()
            delay = 0.5 if time.monotonic() - began > _STABLE_S else min(delay * 2, 30.0)
            log.error("acceptor_exited", extra={"acceptor": index, "code": code, "restart_in_s": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay)

    async def _run(self, index: int, path: str) -> int:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "rollbackd.acceptor.worker", str(theirs.fileno()), pass_fds=(theirs.fileno(),)
            )
        finally:
            theirs.close()
        self._procs[index] = proc
        reader, writer = await asyncio.open_connection(sock=ours)
        serving = False
        try:
            writer.write(channel.frame(channel.Hello(self.core.settings, path, index, self.host, self.port)))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            while (message := await channel.read(reader)) is not None:
                if isinstance(message, channel.Serving):
                    serving = True
                    self.core.metrics.acceptors.inc()
                    self._serving[index].set()
                    log.info("acceptor_serving", extra={"acceptor": index, "pid": message.pid})
                else:
                    await self._apply_logged(index, message)
        finally:
            if serving:
                self.core.metrics.acceptors.dec()
            writer.close()
            code = await proc.wait()
            self._procs.pop(index, None)
        return code

    async def _apply_logged(self, index: int, report: channel.Report) -> None:
        try:
            await self._apply(report)
        except Exception:  # a page or a post that failed: the acceptor and its next reports go on
            log.exception("acceptor_report_failed", extra={"acceptor": index})

    async def _apply(self, report: channel.Report) -> None:
        """An acceptor's decisions, counted and posted as the daemon's own (one coalescing for all)."""
        metrics, told = self.core.metrics, self.core.told
        metrics.acceptor_handoffs.inc(report.handoffs)
        for result, n in report.results.items():
            metrics.webhook_results(result, n)
        for (service, action, reason), n in report.alerts.items():
            told.count(service or None, action, reason, n)
        for alert, decision, n in report.announce.values():
            await told.announce(alert, decision, n)

    async def stop(self) -> None:
        """SIGTERM each: it stops accepting, finishes what it took, sends its last report."""
        self.stopping = True
        self._stopped.set()
        for proc in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=STOP_S)
            for proc in list(self._procs.values()):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
