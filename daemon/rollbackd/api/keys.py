from __future__ import annotations

from aiohttp import web

from rollbackd.wiring import Core

CORE = web.AppKey("core", Core)
