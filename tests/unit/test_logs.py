"""JSON log lines: an unexpected exception carries its whole traceback as a field, next to the one-line
``error`` summary that the journal and Slack keep; secrets stay masked."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from rollbackd import logs


def _capture(emit: Any) -> dict[str, Any]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("rollbackd.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    line: dict[str, Any] = json.loads(stream.getvalue().strip())
    return line


def _deep_failure() -> None:
    raise KeyError("plan[3].argv")


def test_an_exception_is_logged_with_its_traceback_and_a_one_line_summary() -> None:
    def emit(logger: logging.Logger) -> None:
        try:
            _deep_failure()
        except KeyError:
            logger.exception("step_crashed", extra={"api_token": "s3cr3t"})

    line = _capture(emit)
    assert line["event"] == "step_crashed" and line["level"] == "error"
    assert line["error"] == "KeyError: 'plan[3].argv'" and "\n" not in line["error"]
    assert line["traceback"].startswith("Traceback (most recent call last)")
    assert "_deep_failure" in line["traceback"] and "KeyError: 'plan[3].argv'" in line["traceback"]
    assert line["api_token"] == "***"


def test_an_explicit_error_field_is_kept_and_plain_lines_have_no_traceback() -> None:
    def emit(logger: logging.Logger) -> None:
        try:
            _deep_failure()
        except KeyError as exc:
            logger.warning("notify_failed", exc_info=exc, extra={"error": "slack: HTTP 500"})

    line = _capture(emit)
    assert line["error"] == "slack: HTTP 500" and "_deep_failure" in line["traceback"]
    plain = _capture(lambda logger: logger.info("step_started", extra={"attempt": 1}))
    assert "traceback" not in plain and "error" not in plain


def test_asyncpgs_lost_cancel_request_is_a_warning_and_anything_else_unhandled_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncpg leaks ConnectionError("unexpected connection_lost() call") from the cancel request of a query
    cut short on a dead link (MagicStack/asyncpg#1310): known and harmless, so not an unhandled error."""
    import asyncio

    from rollbackd.daemon import _loop_exception

    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="rollbackd.daemon"):
            lost = ConnectionError("unexpected connection_lost() call")
            _loop_exception(loop, {"message": "Task exception was never retrieved", "exception": lost})
            other = ConnectionError("connection refused")
            _loop_exception(loop, {"message": "Task exception was never retrieved", "exception": other})
    finally:
        loop.close()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "store_cancel_request_lost"),
        ("ERROR", "unhandled_exception"),
    ]
