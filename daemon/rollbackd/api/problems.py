"""Every error the API returns is JSON ``{"error": short code, "detail": sentence, ...}``, never a
traceback. Also refuses paths that a normalising router could map elsewhere (``..``, ``//``)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from rollbackd.errors import ConfigError, NotFoundError, PayloadError, StateError
from rollbackd.incidents.controls import Refused

log = logging.getLogger(__name__)

STORE_RETRY_AFTER_S = 5  # Alertmanager re-sends a 5xx at once anyway; other clients get a hint
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


def problem(status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    body = {"error": _STATUS_CODES.get(status, "error"), "detail": detail, **extra}
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="rollbackd"'}
    return web.json_response(body, status=status, headers=headers)


def store_unavailable(request: web.Request, exc: StateError) -> web.Response:
    """The journal could not be written or read: 503 with Retry-After, so the sender re-sends (an alert
    is never answered 202 unless it is journaled). Logged as an error with its traceback."""
    log.error("store_error", exc_info=exc, extra={"path": request.path, "method": request.method})
    return problem(
        503, f"state store unavailable, retry later: {exc}", headers={"Retry-After": str(STORE_RETRY_AFTER_S)}
    )


def suspicious(raw_path: str) -> bool:
    path = raw_path.split("?", 1)[0]
    segments = path.split("/")[1:]
    lowered = path.lower()
    return "" in segments[:-1] or any(s in (".", "..") for s in segments) or "%2e" in lowered or "%2f" in lowered


async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the handler; every error becomes a JSON problem (never a traceback)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.reason if exc.status in (404, 405) else (exc.text or exc.reason))
    except PayloadError as exc:
        return problem(400, str(exc), field=exc.field)
    except ConfigError as exc:
        return problem(400, str(exc))
    except NotFoundError as exc:
        return problem(404, str(exc))
    except Refused as exc:
        return problem(409, str(exc), reason=exc.reason.value)
    except StateError as exc:
        return store_unavailable(request, exc)
    except Exception:
        log.exception("api_error", extra={"path": request.path})
        return problem(500, "internal error; see the daemon's log")
