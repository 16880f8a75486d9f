"""One acceptor process: `python -m rollbackd.acceptor.worker CHANNEL_FD` (started by pool.py).

It serves the webhook on the daemon's own listening socket with the daemon's handler and Intake,
deciding alone the bodies that need nothing but config and the journal's insert; everything else is
handed to the daemon over its unix socket, and the daemon's answer is passed back as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from rollbackd import heap, logs
from rollbackd.acceptor import channel, listening
from rollbackd.api import problems
from rollbackd.api.webhook import HANDOFF, MAX_BODY, SEEN, WEBHOOK, WEBHOOK_PATH, SeenBodies, alertmanager_webhook
from rollbackd.config import Settings
from rollbackd.incidents.intake import Intake
from rollbackd.incidents.starts import Starts
from rollbackd.metrics import Metrics
from rollbackd.periodic import every
from rollbackd.plan import ServiceRuntime
from rollbackd.reasons import IncidentState
from rollbackd.records import Incident
from rollbackd.state import BACKENDS as STATE_BACKENDS
from rollbackd.state import StateStore

log = logging.getLogger("rollbackd.acceptor.worker")  # run as __main__

REPORT_EVERY_S = 0.05
DRAIN_S = 10.0  # requests taken before a stop finish within this
# Per hop (RFC 9110 7.6.1) or recomputed for the body passed on: never copied across the handoff.
_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"}
)


class _DaemonRuns:
    """The acceptor opens and ends no incident (it decides only what ``Intake.decides_alone`` allows);
    nothing is ever starting here, so its storm never steps aside for one."""

    def __init__(self) -> None:
        self.starts = Starts()

    def start(self, incident_id: str) -> Any:
        raise RuntimeError(f"an acceptor opens no incident ({incident_id}): the daemon does")

    async def finish(self, incident: Incident, state: IncidentState, error: str | None) -> IncidentState:
        raise RuntimeError(f"an acceptor ends no incident ({incident.id}): the daemon does")


@dataclass
class AcceptorCore:
    """What the webhook handler reads (rollbackd.api.webhook.WebhookCore)."""

    settings: Settings
    metrics: channel.Relay
    intake: Intake


class Acceptor:
    def __init__(self, hello: channel.Hello, link: socket.socket) -> None:
        self.hello = hello
        self.settings = hello.settings
        self.link = link
        self.relay = channel.Relay()
        self.stop = asyncio.Event()
        self.store: StateStore | None = None
        self.session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        from rollbackd.wiring import build_backend

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        reader, writer = await asyncio.open_connection(sock=self.link)
        self.store = store = build_backend(STATE_BACKENDS, self.settings.state, "state")
        await store.open()
        services = {name: ServiceRuntime(name=name, config=svc) for name, svc in self.settings.services.items()}
        intake = Intake(
            settings=self.settings,
            store=store,
            services=services,
            runner=_DaemonRuns(),
            told=self.relay,
            metrics=Metrics(services),
        )
        self.session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.hello.daemon_socket),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=120),
            auto_decompress=False,
        )
        runner = web.AppRunner(self._app(AcceptorCore(self.settings, self.relay, intake)), access_log=None)
        await runner.setup()
        # Bound only now, ready to serve: a socket of the port nobody accepts on would hold its share of
        # new connections waiting (listening.py).
        await web.SockSite(runner, listening.bind(self.hello.host, self.hello.port), shutdown_timeout=DRAIN_S).start()
        heap.settle()
        writer.write(channel.frame(channel.Serving(os.getpid())))
        log.info("acceptor_started", extra={"acceptor": self.hello.index})
        tasks = [
            asyncio.create_task(self._report(writer)),
            asyncio.create_task(every(1.0, intake.flush_duplicates, "flush_duplicates")),
            asyncio.create_task(self._until_closed(reader)),
        ]
        await self.stop.wait()
        await runner.cleanup()  # the listening socket first (a restarted daemon binds it), then what it took
        for task in tasks:
            task.cancel()
        await intake.flush_duplicates()
        with contextlib.suppress(ConnectionError):
            await self._send(writer)
        writer.close()
        await self.session.close()
        await store.close()
        log.info("acceptor_stopped", extra={"acceptor": self.hello.index})

    def _app(self, core: AcceptorCore) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY + 1)
        app[WEBHOOK] = core
        app[SEEN] = SeenBodies(self.settings.webhook.body_cache_bytes)
        app[HANDOFF] = self.handoff
        webhook = functools.partial(problems.guarded, handler=alertmanager_webhook)
        app.router.add_post(WEBHOOK_PATH, webhook)
        app.router.add_route("*", "/{tail:.*}", functools.partial(problems.guarded, handler=self._pass_on))
        return app

    async def _pass_on(self, request: web.Request) -> web.StreamResponse:
        return await self.handoff(request, await request.read())

    async def handoff(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """The daemon's answer to this request (sent to it as it came, the body already read)."""
        assert self.session is not None
        self.relay.report.handoffs += 1
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
        url = URL("http://rollbackd" + request.raw_path, encoded=True)
        try:
            async with self.session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            ) as answer:
                payload = await answer.read()
                kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in _HOP]
                status = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("acceptor_handoff_failed", extra={"path": request.path, "error": str(exc)[:200]})
            return problems.problem(
                503,
                "the daemon did not answer (an acceptor took this request); retry later",
                headers={"Retry-After": str(problems.STORE_RETRY_AFTER_S)},
            )
        response = web.Response(status=status, body=payload)
        for key, value in kept:
            response.headers.add(key, value)
        return response

    async def _report(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            try:
                await self._send(writer)
            except ConnectionError:
                self.stop.set()
                return

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        if self.relay.report:
            writer.write(channel.frame(self.relay.take()))
            await writer.drain()

    async def _until_closed(self, reader: asyncio.StreamReader) -> None:
        """The daemon never writes after its hello: the channel's end is the daemon's end."""
        await reader.read()
        log.warning("acceptor_daemon_gone", extra={"acceptor": self.hello.index})
        self.stop.set()


def main(argv: list[str]) -> None:
    link = socket.socket(fileno=int(argv[0]))
    hello = channel.read_blocking(link)
    logs.setup(hello.settings.log.level, process=f"acceptor-{hello.index}")
    started = time.monotonic()
    try:
        asyncio.run(Acceptor(hello, link).run())
    except Exception:
        log.exception("acceptor_failed", extra={"acceptor": hello.index, "after_s": time.monotonic() - started})
        raise SystemExit(1) from None


if __name__ == "__main__":
    main(sys.argv[1:])
