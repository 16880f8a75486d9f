"""Hostile input over real HTTP: bytes no client library would send, wrong JSON types, lone surrogates.
Every answer is a 4xx JSON problem (never a 5xx, never aiohttp's text page) and nothing is journaled."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.errors import StateError
from tests.integration.test_webhook_api import PATH, dumps, journaled, plan, post
from tests.support.bodies import many_alerts
from tests.support.daemon import API_TOKEN, WEBHOOK_TOKEN, command_service, running_daemon, write_config


@pytest.fixture
async def daemon(tmp_path: Path) -> Any:
    cfg = write_config(tmp_path, services={"rag": command_service(plan(tmp_path))})
    async with running_daemon(cfg) as d, aiohttp.ClientSession(d.url) as http:
        d.http = http
        yield d


async def raw_request(d: Any, head: bytes, body: bytes = b"") -> tuple[int, bytes, Any]:
    """Send bytes exactly as given; returns status, the Content-Type header and the parsed JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
    try:
        writer.write(head + b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    header_block, _, payload = response.partition(b"\r\n\r\n")
    lines = header_block.split(b"\r\n")
    status = int(lines[0].split()[1])
    ctype = next(
        (line.split(b":", 1)[1].strip() for line in lines[1:] if line.lower().startswith(b"content-type:")), b""
    )
    return status, ctype, json.loads(payload) if ctype.startswith(b"application/json") else payload


BAD_AUTH_BYTES = [
    ("latin-1 byte", b"Bearer caf\xe9"),
    ("invalid utf-8", b"Bearer \xff\xfe\xfd"),
    ("utf-8 non-ascii", "Bearer t\u00f6ken".encode()),
    ("token then latin-1", b"Bearer " + WEBHOOK_TOKEN.encode() + b"\xe9"),
]


@pytest.mark.parametrize(("name", "value"), BAD_AUTH_BYTES, ids=[b[0] for b in BAD_AUTH_BYTES])
@pytest.mark.parametrize("path", [PATH, "/v1/status", "/v1/incidents"])
async def test_undecodable_authorization_is_401_json(
    daemon: Any, firing_payload: dict[str, Any], name: str, value: bytes, path: str
) -> None:
    method = b"POST" if path == PATH else b"GET"
    head = (
        method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: " + value + b"\r\n"
    )
    status, ctype, body = await raw_request(daemon, head, dumps(firing_payload) if path == PATH else b"")
    assert (status, ctype) == (401, b"application/json; charset=utf-8"), body
    assert body["error"] == "unauthorized"
    assert await journaled(daemon) == (0, 0, 0)


async def test_v1_auth_failure_is_a_json_problem(daemon: Any) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}):
        async with daemon.http.get("/v1/incidents", headers=headers) as r:
            assert r.status == 401 and r.content_type == "application/json"
            assert (await r.json())["error"] == "unauthorized"
    async with daemon.http.get("/v1/incidents", headers={"Authorization": f"Bearer {API_TOKEN}"}) as r:
        assert r.status == 200


def replaced(payload: dict[str, Any], old: str, new: str) -> bytes:
    raw = json.dumps(payload, separators=(",", ":"))
    assert old in raw, old
    return raw.replace(old, new, 1).encode()


WRONG_TYPES = [
    ('"truncatedAlerts":0', '"truncatedAlerts":0.0', "truncatedAlerts"),
    ('"truncatedAlerts":0', '"truncatedAlerts":1e2', "truncatedAlerts"),
    ('"truncatedAlerts":0', '"truncatedAlerts":-0', "truncatedAlerts"),
    ('"truncatedAlerts":0', '"truncatedAlerts":"0"', "truncatedAlerts"),
    ('"truncatedAlerts":0', '"truncatedAlerts":true', "truncatedAlerts"),
    ('"truncatedAlerts":0', '"truncatedAlerts":null', "truncatedAlerts"),
    ('"truncatedAlerts":0', '"truncatedAlerts":-1', "truncatedAlerts"),
    ('"endsAt":"0001-01-01T00:00:00Z"', '"endsAt":null', "alerts[0].endsAt"),
    ('"endsAt":"0001-01-01T00:00:00Z"', '"endsAt":0', "alerts[0].endsAt"),
    (
        '"generatorURL":"http://vm:19090/graph?g0.expr=my_gauge+%3E+1&g0.tab=1"',
        '"generatorURL":null',
        "alerts[0].generatorURL",
    ),
    ('"fingerprint":"e07521b485271af4"', '"fingerprint":12', "alerts[0].fingerprint"),
    ('"job":"app"', '"job":"a\\ud800"', "alerts[0].labels.job"),
    ('"job":"app"', '"job":"\\udfff"', "alerts[0].labels.job"),
    ('"job":"app"', '"j\\udc00b":"app"', "alerts[0].labels.j\\udc00b"),
    ('"summary":"my_gauge=5"', '"summary":"x\\ud800"', "alerts[0].annotations.summary"),
    ('"receiver":"ok-hook"', '"receiver":"\\uDBFF"', "receiver"),
    ('"job":"app"', '"job":"a\\u0000b"', "alerts[0].labels.job"),
]


@pytest.mark.parametrize(("old", "new", "field"), WRONG_TYPES, ids=[w[1] for w in WRONG_TYPES])
async def test_wrong_types_and_bad_strings_are_400_naming_the_field(
    daemon: Any, firing_payload: dict[str, Any], old: str, new: str, field: str
) -> None:
    status, body = await post(daemon, replaced(firing_payload, old, new))
    assert status == 400 and body["error"] == "bad_request", body
    assert body["field"] == field
    assert await journaled(daemon) == (0, 0, 0)


async def test_paired_surrogates_and_positive_truncation_are_fine(daemon: Any, firing_payload: dict[str, Any]) -> None:
    raw = replaced(firing_payload, '"truncatedAlerts":0', '"truncatedAlerts":7')
    status, body = await post(daemon, raw.replace(b'"job":"app"', b'"job":"\\ud83d\\ude00"'))
    assert status == 202, body
    (row,) = await daemon.core.store.recent_alerts("rag", 10)
    assert row["labels"]["job"] == "\U0001f600"


# ---- the biggest body: 1 MiB, 4,000 alerts ------------------------------------------------------------


def count_commits(store: Any) -> list[int]:
    calls = [0]
    atomic = store._atomic

    async def counted(statements: Any) -> Any:
        calls[0] += 1
        return await atomic(statements)

    store._atomic = counted
    return calls


async def test_a_1mib_body_of_4000_alerts_is_journaled_in_a_few_commits(daemon: Any) -> None:
    raw = many_alerts(4000)
    assert len(raw) <= 1_048_576
    commits = count_commits(daemon.core.store)
    status, body = await asyncio.wait_for(post(daemon, raw), 30)  # a liveness bound; the timing is in bench/
    assert status == 202 and body["accepted"] == 4000
    reasons = [d["reason"] for d in body["decisions"]]
    assert reasons.count("rollback_rule") == 1 and reasons.count("unknown_service") == 400
    # the rest are suppressed by the incident while it runs, or by the cooldown once it ended (it may end
    # while the body is still being decided: the incident's first step never waits behind a body)
    suppressed = reasons.count("incident_active") + reasons.count("cooldown")
    assert suppressed == 4000 - 400 - 800 - 1 and reasons.count("resolved") == 800
    assert len(await daemon.core.store.recent_alerts(None, 10_000)) == 4000
    assert len(await daemon.core.store.list_incidents(None, 10)) == 1
    assert commits[0] <= 5  # one for the incident, one for the rest (plus the runner's own), not 4,000
    status, again = await post(daemon, many_alerts(4000, seed="b"))
    assert status == 202 and "rollback_rule" not in {d["reason"] for d in again["decisions"]}
    assert len(await daemon.core.store.recent_alerts(None, 10_000)) == 8000


async def test_a_failed_body_commit_forgets_the_alerts_so_the_retry_decides_them(daemon: Any) -> None:
    raw = many_alerts(50)
    store = daemon.core.store
    journal_alerts = store.journal_alerts

    async def broken(rows: Any) -> None:
        raise StateError("injected: journal down")

    store.journal_alerts = broken
    status, body = await post(daemon, raw)
    assert status >= 500 and body["error"] in ("error", "unavailable")
    assert await journaled(daemon) == (0, 0, 0)  # alert 0 waited for the batch, which failed first
    store.journal_alerts = journal_alerts
    status, body = await post(daemon, raw)
    assert status == 202
    reasons = [d["reason"] for d in body["decisions"]]
    assert "duplicate" not in reasons and reasons.count("rollback_rule") == 1
    assert len(await store.recent_alerts(None, 100)) == 50
