"""The escalation page is journaled and re-sent until delivered, across a kill -9 of the daemon; after
`page_webhook.give_up_after` it is given up and logged as an error."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from rollbackd.incidents.pager import PENDING_KEY
from tests.support.daemon import DaemonProcess, command_service, running_daemon, write_config
from tests.support.http_stub import JsonHandler, serve


class PageHook(JsonHandler):
    def do_POST(self) -> None:
        body = self.read_json()
        self.server.attempts.append(body)
        if self.server.down:
            self.send_json(500, {"error": "pager down"})
        else:
            self.server.pages.append(body)
            self.send_json(200, {"ok": True})


def failing_service(url: str, **hook: Any) -> dict[str, Any]:
    svc = command_service([{"type": "command", "name": "broken", "argv": ["/bin/false"]}])
    svc["page_webhook"] = {"url": url, "retries": 0, **hook}
    return svc


def wait(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.05)


def test_an_undelivered_page_is_sent_after_a_restart(tmp_path: Path) -> None:
    with serve(PageHook, attempts=[], pages=[], down=True) as hook:
        cfg = write_config(tmp_path, services={"rag": failing_service(f"{hook.url}/page")})
        daemon = DaemonProcess(cfg)
        try:
            daemon.start()
            status, body = daemon.api.call("POST", "/v1/trigger", {"reason": "test", "service": "rag"})
            assert status == 202
            daemon.api.wait_incident(body["id"], ("failed",))
            wait(lambda: len(hook.attempts) >= 1, what="a first page attempt")
            daemon.kill9()  # the page was never delivered; only the journal knows about it
            hook.down = False
            daemon.start()
            wait(lambda: bool(hook.pages), what="the page after the restart")
            (page,) = hook.pages
            assert page["incident_id"] == body["id"] and page["state"] == "failed"
            events = daemon.api.call("GET", f"/v1/incidents/{body['id']}")[1]["events"]
            wait(
                lambda: any(
                    e["kind"] == "page" and e["reason"] == "sent"
                    for e in daemon.api.call("GET", f"/v1/incidents/{body['id']}")[1]["events"]
                ),
                what="the page journaled as sent",
            )
            assert any(e["kind"] == "page" and e["reason"] == "queued" for e in events)
        finally:
            daemon.stop()


async def test_a_page_never_delivered_is_given_up_and_logged_as_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serve(PageHook, attempts=[], pages=[], down=True) as hook:
        svc = failing_service(f"{hook.url}/page", give_up_after="1s")
        cfg = write_config(tmp_path, services={"rag": svc})
        async with running_daemon(cfg) as d:
            incident = await d.core.controls.trigger(
                "rag", reason="test", actor="tester", dry_run=False, to_release=None
            )
            await d.core.runner.wait(incident.id)
            await asyncio.wait_for(d.core.runner.pager.wait(), 30)
            pending = await d.core.store.get_kv(PENDING_KEY)
            events = await d.core.store.events(incident_id=incident.id, kinds=("page",))
    assert len(hook.attempts) >= 2 and hook.pages == []
    (given_up,) = [r for r in caplog.records if r.getMessage() == "page_given_up"]
    assert given_up.levelno == logging.ERROR and given_up.page_incident_id == incident.id  # type: ignore[attr-defined]
    assert pending == {}
    assert [e.reason for e in events] == ["given_up", "queued"]
