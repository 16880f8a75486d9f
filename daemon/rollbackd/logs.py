"""JSON logs, one event a line: ``{"ts", "level", "event", "logger", ...fields}``. The incident id,
service and step come from contextvars, so every line written while an incident runs carries them.
Log an event name plus fields (``log.info("step_done", extra={...})``), never an f-string sentence."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rollbackd import redact

incident_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("incident_id", default=None)
service: contextvars.ContextVar[str | None] = contextvars.ContextVar("service", default=None)
step: contextvars.ContextVar[str | None] = contextvars.ContextVar("step", default=None)

_STD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_SECRETISH = ("token", "password", "secret", "authorization", "api_key", "webhook_url")


_LOG_LIMIT = 4000


def _masked(value: Any) -> Any:
    """By value too, not only by field name: a URL or a message may carry a secret (rollbackd.redact)."""
    return redact.text(value, _LOG_LIMIT) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self.process = process  # a helper process's name on every line ("acceptor-0"); the daemon's: none

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        if self.process is not None:
            out["process"] = self.process
        for var, name in ((incident_id, "incident_id"), (service, "service"), (step, "step")):
            value = var.get()
            if value is not None:
                out[name] = value
        for key, value in record.__dict__.items():
            if key in _STD or key.startswith("_"):
                continue
            out[key] = "***" if any(s in key.lower() for s in _SECRETISH) else _masked(value)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out.setdefault("error", redact.text(f"{type(exc).__name__}: {exc}", _LOG_LIMIT))
            # The one-line summary goes to the journal and Slack; the log keeps the whole story.
            out["traceback"] = redact.text("".join(traceback.format_exception(exc)), 20 * _LOG_LIMIT)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup(level: str = "info", stream: Any = None, *, process: str | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "apscheduler", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def bound(*, incident: str | None = None, svc: str | None = None, step_name: str | None = None) -> Iterator[None]:
    tokens = []
    for var, value in ((incident_id, incident), (service, svc), (step, step_name)):
        if value is not None:
            tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def monotonic() -> float:
    return time.monotonic()
