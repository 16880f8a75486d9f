"""A TCP proxy on loopback that can cut or blackhole a connection on demand (a Postgres outage).

    async with TcpProxy("127.0.0.1", 5432) as proxy:       # proxy.port forwards to the server
    with ThreadedProxy("127.0.0.1", 5432) as proxy:         # the same, on a thread of its own
        proxy.cut()          # every connection closed, new ones refused (closed at once)
        proxy.blackhole()    # connections stay open but nothing passes: clients wait for their timeouts
        proxy.restore()      # forward again (blackholed connections are closed: their bytes were lost)

Runs in the caller's event loop; every task it starts is tracked and cancelled on exit (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Literal

Mode = Literal["forward", "cut", "blackhole"]


class TcpProxy:
    def __init__(self, host: str, port: int, *, max_connections: int = 64) -> None:
        self.target = (host, port)
        self.mode: Mode = "forward"
        self.max_connections = max_connections
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        self.mode = "cut"
        self._close_all()

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def restore(self) -> None:
        if self.mode == "blackhole":
            self._close_all()
        self.mode = "forward"

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut" or len(self._writers) >= 2 * self.max_connections:
            writer.close()
            return
        self.connections += 1
        self._writers.add(writer)
        if self.mode == "blackhole":  # accept and say nothing, until restored (then closed)
            while writer in self._writers:
                await asyncio.sleep(0.05)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, writer, up_writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *pair: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if self.mode == "forward":
                    dst.write(data)
                    await dst.drain()
                # blackhole: the bytes are lost, as on a dead link
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in pair:
                self._writers.discard(writer)
                with contextlib.suppress(Exception):
                    writer.close()


class ThreadedProxy:
    """A TcpProxy on an event loop of its own thread, for tests whose daemons are subprocesses and
    whose waits block (``with ThreadedProxy("127.0.0.1", 5432) as proxy: proxy.blackhole()``)."""

    def __init__(self, host: str, port: int) -> None:
        self.proxy = TcpProxy(host, port)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    @property
    def port(self) -> int:
        return self.proxy.port

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with self.proxy:
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ThreadedProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.cut)

    def blackhole(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.blackhole)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.restore)
