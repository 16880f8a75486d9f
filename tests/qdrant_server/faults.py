"""A fault hook outside Qdrant's API, for tests only: make an endpoint fail, hang or drop the connection.

    POST   /__test__/faults  {"path_regex": "...", "method": "PUT", "status": 500, "message": "...",
                              "delay_s": 0, "times": 1, "drop": false}
    GET    /__test__/faults  the faults still armed
    DELETE /__test__/faults  disarm all

A request whose method matches (`method` null or "*" = any) and whose path matches `path_regex`
(re.search) waits `delay_s`, then: with `drop` the connection is closed without an answer; with a
`status` it gets a Qdrant-shaped error `{"status": {"error": message}, "time": ...}`; with `status`
null it proceeds normally (a pure delay). `times` faults are consumed (null = until cleared).
Production code never calls these paths; they need no api-key.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .errors import QdrantError

PREFIX = "/__test__/"


@dataclass
class Fault:
    id: int
    path_regex: re.Pattern[str]
    method: str | None
    status: int | None
    message: str
    delay_s: float
    times: int | None
    drop: bool

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path_regex": self.path_regex.pattern,
            "method": self.method,
            "status": self.status,
            "message": self.message,
            "delay_s": self.delay_s,
            "times": self.times,
            "drop": self.drop,
        }


def parse_fault(body: object, fault_id: int) -> Fault:
    if not isinstance(body, dict) or not isinstance(body.get("path_regex"), str):
        raise QdrantError(400, "fault needs a JSON object with a string `path_regex`")
    try:
        pattern = re.compile(body["path_regex"])
    except re.error as exc:
        raise QdrantError(400, f"bad path_regex: {exc}") from None
    method = body.get("method")
    status = body.get("status", 500)
    times = body.get("times", 1)
    delay = body.get("delay_s", 0)
    if method is not None and not isinstance(method, str):
        raise QdrantError(400, "`method` must be a string or null")
    if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
        raise QdrantError(400, "`status` must be an HTTP status code or null")
    if times is not None and (not isinstance(times, int) or times < 1):
        raise QdrantError(400, "`times` must be a positive integer or null")
    if not isinstance(delay, int | float) or delay < 0:
        raise QdrantError(400, "`delay_s` must be a non-negative number")
    message = body.get("message") or "Service internal error: injected fault"
    return Fault(
        id=fault_id,
        path_regex=pattern,
        method=None if method in (None, "*") else method.upper(),
        status=status,
        message=str(message),
        delay_s=float(delay),
        times=times,
        drop=bool(body.get("drop")),
    )


class Faults:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if (fault.method is None or fault.method == method) and fault.path_regex.search(path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault
        return None

    async def add(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        fault = parse_fault(body, next(self._ids))
        self._faults.append(fault)
        return web.json_response({"result": fault.public(), "status": "ok", "time": 0.0})

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({"result": [f.public() for f in self._faults], "status": "ok", "time": 0.0})

    async def clear(self, request: web.Request) -> web.Response:
        self._faults.clear()
        return web.json_response({"result": True, "status": "ok", "time": 0.0})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PREFIX + "faults", self.add)
        app.router.add_get(PREFIX + "faults", self.list)
        app.router.add_delete(PREFIX + "faults", self.clear)

    async def apply(self, request: web.Request) -> web.StreamResponse | None:
        """Run the fault armed for this request, if any; None means "handle it normally"."""
        if request.path.startswith(PREFIX):
            return None
        fault = self.take(request.method, request.path)
        if fault is None:
            return None
        started = time.monotonic()
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.drop:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if fault.status is None:
            return None
        return web.json_response(
            {"status": {"error": fault.message}, "time": time.monotonic() - started}, status=fault.status
        )
