"""`rollbackd serve`: config -> core -> API on the listen address; resume open incidents; tell systemd.

Start order: journal open, notifier queue, incidents resumed, HTTP listening, READY=1. Stop order
(SIGTERM/SIGINT): stop taking requests, interrupt running incidents where they are (the journal lets
the next start resume them), drain notifications, close the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from typing import TYPE_CHECKING

from aiohttp import web

from rollbackd import heap, logs, plugins, sdnotify, status
from rollbackd.api.app import create_app
from rollbackd.config import Settings, split_listen
from rollbackd.ha.node import Node
from rollbackd.periodic import every
from rollbackd.scheduler import Scheduler
from rollbackd.state import retention
from rollbackd.wiring import Core, build_core

if TYPE_CHECKING:
    from rollbackd.acceptor.pool import Acceptors

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, settings: Settings, *, listen: str | None = None) -> None:
        self.settings = settings
        self.listen = listen or settings.listen
        self.core: Core | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None
        self.scheduler: Scheduler | None = None
        self.node: Node | None = None
        self.acceptors: Acceptors | None = None
        self._port_claim: socket.socket | None = None

    async def start(self) -> Core:
        core = build_core(self.settings)
        self.core = core
        await core.start()
        self.node = node = Node(core, self.listen)
        self.scheduler = Scheduler(gate=lambda: node.leading)  # schedules and drills: the leader's
        for plugin in plugins.having("jobs"):
            plugin.jobs(core, self.scheduler)
        retention.schedule(core, self.scheduler)
        self.scheduler.start()
        resumed = await node.start()
        app = create_app(core)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = split_listen(self.listen)
        if self.settings.webhook.acceptors:
            await self._serve_with_acceptors(core, host, port)
        else:
            site = web.TCPSite(self._runner, host, port, reuse_address=True)
            await site.start()
            sockets = getattr(site._server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else port
        self._tasks = [
            asyncio.create_task(every(1.0, core.intake.flush_duplicates, "flush_duplicates")),
            asyncio.create_task(every(5.0, self._refresh_gauges, "refresh_gauges")),
        ]
        interval = sdnotify.watchdog_interval()
        if interval:
            self._tasks.append(asyncio.create_task(every(interval, self._watchdog, "watchdog")))
        await self._refresh_gauges()
        sdnotify.notify(f"READY=1\nSTATUS=listening on {host}:{self.port}")
        log.info(
            "daemon_started",
            extra={
                "listen": f"{host}:{self.port}",
                "resumed": resumed,
                "services": sorted(core.services),
                "mode": self.settings.mode,
                "ha": node.describe(),
                "leader": node.leading,
            },
        )
        return core

    async def _serve_with_acceptors(self, core: Core, host: str, port: int) -> None:
        """The daemon and its acceptor processes each accept on their own socket of the port (rollbackd.acceptor)."""
        from rollbackd.acceptor import listening
        from rollbackd.acceptor.pool import Acceptors

        assert self._runner is not None
        self._port_claim = listening.claim(host, port)
        sock = listening.bind(host, port)
        await web.SockSite(self._runner, sock).start()
        self.port = sock.getsockname()[1]
        self.acceptors = Acceptors(core, host, self.port, self.settings.webhook.acceptors)
        await self.acceptors.start(self._runner)  # serving (bounded) before the daemon says it is started

    async def _refresh_gauges(self) -> None:
        assert self.core is not None
        core = self.core
        await status.build(core, now=core.runner.clock(), update_metrics=True)

    async def _watchdog(self) -> None:
        assert self.core is not None
        await self.core.store.ping()  # only a daemon whose journal answers is alive
        sdnotify.notify("WATCHDOG=1")

    async def _stop_housekeeping(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        sdnotify.notify("STOPPING=1")
        await self._stop_housekeeping()
        if self.acceptors is not None:  # they hand requests to the daemon: they stop first
            await self.acceptors.stop()
        if self.core is not None:  # before the API drains: an open request may be waiting for this work
            for plugin in plugins.having("stopping"):
                await plugin.stopping(self.core)
        if self.node is not None:
            await self.node.stop_tasks()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.core is not None:
            await self.core.close()
        if self.node is not None:
            await self.node.release()
        log.info("daemon_stopped")


# asyncpg's cancel request of a query cut short on a dead link (the server unreachable) leaks this
# error from its own background task (MagicStack/asyncpg#1310): the query was already given up, and
# the pool replaces the connection. Known and harmless: a warning, not an "unhandled" error at 3 AM.
_ASYNCPG_CANCEL_LOST = "unexpected connection_lost() call"


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """What asyncio would print as "Task exception was never retrieved": a JSON line with the traceback."""
    exc = context.get("exception")
    if type(exc) is ConnectionError and exc.args == (_ASYNCPG_CANCEL_LOST,):
        log.warning("store_cancel_request_lost", extra={"error": str(exc), "detail": "asyncpg#1310"})
        return
    log.error(
        "unhandled_exception",
        exc_info=exc if isinstance(exc, BaseException) else None,
        extra={"detail": str(context.get("message", "")), "task": str(context.get("task", ""))[:200]},
    )


async def serve(settings: Settings, *, listen: str | None = None) -> None:
    logs.setup(settings.log.level)
    daemon = Daemon(settings, listen=listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    heap.settle()  # start-up's objects out of every collection (heap.py)
    try:
        await stop.wait()
    finally:
        await daemon.stop()
