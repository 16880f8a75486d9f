"""Process entry point: serve until SIGTERM/SIGINT (PID 1 safe), optionally generating its own traffic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import aiohttp
from aiohttp import web

from .app import STORE, create_app
from .retrieval import raw_tokens
from .settings import Settings
from .store import Store, Unavailable

log = logging.getLogger("ragservice")
FALLBACK_QUESTIONS = ("How wide is the Heron telescope mirror?", "When do Osprey firmware releases ship?")


async def _questions(store: Store) -> list[str]:
    """Questions built from the documents' first sentences: a good release answers them well."""
    try:
        firsts = await store.first_sentences(50)
    except Unavailable:
        firsts = []
    questions = [" ".join(raw_tokens(s)[:8]) for s in firsts]
    return [f"What about {q}?" for q in questions if q] or list(FALLBACK_QUESTIONS)


async def self_traffic(settings: Settings, store: Store) -> None:
    """Send RAG_SELF_TRAFFIC_RPS synthetic queries per second to our own /query (so every metric moves)."""
    loop = asyncio.get_running_loop()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    url = f"http://{host}:{settings.port}/query"
    interval = 1.0 / settings.self_traffic_rps
    inflight: set[asyncio.Task[None]] = set()

    async def one(http: aiohttp.ClientSession, question: str) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.post(url, json={"question": question}, headers={"X-Rag-Synthetic": "1"}) as r:
                await r.read()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        questions: list[str] = []
        n = 0
        due = loop.time()
        try:
            while True:
                if n % 200 == 0:
                    questions = await _questions(store)
                if len(inflight) < 64:
                    task = asyncio.create_task(one(http, questions[n % len(questions)]))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                n += 1
                due += interval
                await asyncio.sleep(max(0.0, due - loop.time()))
        finally:
            for task in list(inflight):
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    traffic: asyncio.Task[None] | None = None
    try:
        await web.TCPSite(runner, settings.host, settings.port, reuse_address=True).start()
        log.info("ragservice %s (%s) listening on %s:%s", settings.version, settings.mode, settings.host, settings.port)
        if settings.self_traffic_rps > 0:
            traffic = asyncio.create_task(self_traffic(settings, app[STORE]))
        await stop.wait()
        log.info("ragservice stopping")
    finally:
        if traffic is not None:
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
        await runner.cleanup()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(Settings.from_env()))
