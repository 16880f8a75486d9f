"""A load balancer's admin API for the end-to-end tests: GET/PUT /weight {"weight": n}, and the
history of every weight set (so a test sees the cut and the restore)."""

from __future__ import annotations

import contextlib
from typing import Any

from tests.support.http_stub import JsonHandler, serve


class _Admin(JsonHandler):
    def do_GET(self) -> None:
        self.send_json(200, {"weight": self.server.weight})

    def do_PUT(self) -> None:
        self.server.weight = int(self.read_json()["weight"])
        self.server.history.append(self.server.weight)
        self.send_json(200, {"weight": self.server.weight})

    do_POST = do_PUT


class TrafficStub:
    """`with TrafficStub() as stub:` -> ``stub.url``, ``stub.weight``, ``stub.history``."""

    def __init__(self, weight: int = 100) -> None:
        self._initial = weight
        self._exit = contextlib.ExitStack()
        self._server: Any = None
        self.url = ""

    @property
    def weight(self) -> int:
        return int(self._server.weight)

    @property
    def history(self) -> list[int]:
        return list(self._server.history)

    def __enter__(self) -> TrafficStub:
        self._server = self._exit.enter_context(serve(_Admin, weight=self._initial, history=[]))
        self.url = self._server.url
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()
