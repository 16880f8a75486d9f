"""`python -m tests.qdrant_server --host 127.0.0.1 --port N --storage DIR [--api-key K]`.

Prints one line `listening on http://HOST:PORT` once it accepts connections (`--port 0` picks a free
port), and stops cleanly, saving its state, on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from aiohttp import web

from .app import create_app


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.qdrant_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6333)
    parser.add_argument("--storage", type=Path, required=True, help="storage directory (created if missing)")
    parser.add_argument("--api-key", default=None, help="require this key in `api-key` or a Bearer token")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop (gracefully) when the process that started this one goes away",
    )
    return parser.parse_args(argv)


async def _watch_parent(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
        await asyncio.sleep(0.5)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_parent(stop)) if args.exit_with_parent else None
    runner = web.AppRunner(create_app(args.storage, api_key=args.api_key), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        server = site._server
        port = server.sockets[0].getsockname()[1] if isinstance(server, asyncio.Server) else args.port
        print(f"listening on http://{args.host}:{port}", flush=True)
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
