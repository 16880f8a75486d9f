"""A whole incident with every kind of secret configured (Postgres journal DSN with a password, Slack
bot token, the daemon's tokens, an http step's token in its URL and header, the paging URL's key and
header) and a step whose error quotes them back: no secret value appears in the log lines, the journal,
the Slack recorder's bodies or the page bodies."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rollbackd import logs
from tests.integration.test_runner import only_incident, webhook
from tests.integration.test_slack_thread import slack_config
from tests.support.daemon import TEST_ENV, command_service, running_daemon, write_config
from tests.support.http_stub import JsonHandler, serve
from tests.support.slack_recorder import SlackRecorder

SECRETS = {
    "DEPLOY_TOKEN": "deploy-secret-2x9q",
    "PAGE_TOKEN": "page-secret-token-7k",
    "PAGE_KEY": "page-routing-key-5m",
    "STATE_PASSWORD": "state-db-pass-4w",
}


class Echo(JsonHandler):
    """A CD system that fails and quotes the whole request back (URL and headers): the worst case."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/page"):
            self.server.pages.append(json.loads(body))
            self.send_json(202, {})
            return
        self.server.auth.append(self.headers.get("Authorization"))
        self.send_json(
            502, {"error": "bad gateway", "request": f"POST {self.path}", "headers": dict(self.headers.items())}
        )


@pytest.fixture
def captured_logs() -> Any:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


async def journal_text(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        rows = []
        for table in ("rb_alerts", "rb_incidents", "rb_steps", "rb_events", "rb_kv"):
            rows += [dict(r) for r in await conn.fetch(f"SELECT * FROM {table}")]
    finally:
        await conn.close()
    return json.dumps(rows, default=str)


async def test_no_secret_leaves_in_logs_journal_slack_or_page(
    tmp_path: Path,
    pg_dsn: str,
    slack_recorder: SlackRecorder,
    firing_payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    captured_logs: io.StringIO,
) -> None:
    state_dsn = pg_dsn.replace("postgresql://postgres@", f"postgresql://postgres:{SECRETS['STATE_PASSWORD']}@")
    assert state_dsn != pg_dsn  # trust auth on the test server: the password is sent, never checked
    with serve(Echo, pages=[], auth=[]) as cd:
        env = {
            **SECRETS,
            "STATE_DSN": state_dsn,
            "SLACK_BOT_TOKEN": slack_recorder.token,
            "PAGE_URL": f"{cd.url}/page?key={SECRETS['PAGE_KEY']}",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        svc = command_service(
            [
                {"type": "command", "name": "env", "argv": ["/usr/bin/env"]},
                {
                    "type": "http",
                    "name": "deploy",
                    "url": cd.url + "/deploy?token=${DEPLOY_TOKEN}",
                    "headers": {"Authorization": "Bearer ${DEPLOY_TOKEN}"},
                    "json_body": {"v": "$service"},
                },
            ]
        )
        svc["page_webhook"] = {"url": "${PAGE_URL}", "headers": {"Authorization": "Bearer ${PAGE_TOKEN}"}, "retries": 0}
        cfg = write_config(
            tmp_path,
            services={"rag": svc},
            notify=slack_config(slack_recorder),
            state={"type": "postgres", "dsn": "${STATE_DSN}"},
        )
        async with running_daemon(cfg) as d:
            await webhook(d, firing_payload)
            incident, steps = await only_incident(d)
            await d.core.notify.drain()
            for _ in range(200):
                if cd.pages:
                    break
                await asyncio.sleep(0.05)
        pages = list(cd.pages)
    assert incident.state.value == "failed" and [s.state.value for s in steps] == ["done", "failed"]
    assert "HTTP 502" in (steps[1].error or "") and pages, "the failure and the page happened"
    assert cd.auth == [f"Bearer {SECRETS['DEPLOY_TOKEN']}"]  # the step ran with the real credential
    places = {
        "logs": captured_logs.getvalue(),
        "journal": await journal_text(pg_dsn),
        "slack": json.dumps([r.body for r in slack_recorder.requests]),
        "page": json.dumps(pages),
    }
    assert all(places.values())
    every_secret = [*SECRETS.values(), slack_recorder.token, *TEST_ENV.values()]
    leaks = {(where, secret) for where, text in places.items() for secret in every_secret if secret in text}
    assert leaks == set()
