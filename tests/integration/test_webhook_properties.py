"""Property: whatever a client sends, the webhook never answers 5xx, and a body it refuses leaves the
journal exactly as it was (no alert, no event, no incident). Hypothesis drives a real daemon over HTTP."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollbackd.reasons import EventKind
from tests.conftest import load_fixture, relabel
from tests.integration.test_webhook_api import plan, post
from tests.integration.test_webhook_hostile import raw_request
from tests.support.daemon import WEBHOOK_TOKEN, command_service, running_daemon, write_config

PATHS = [
    ("version",),
    ("status",),
    ("receiver",),
    ("groupKey",),
    ("externalURL",),
    ("truncatedAlerts",),
    ("groupLabels",),
    ("commonLabels",),
    ("commonAnnotations",),
    ("alerts",),
    ("alerts", 0),
    ("alerts", 0, "status"),
    ("alerts", 0, "labels"),
    ("alerts", 0, "labels", "service"),
    ("alerts", 0, "labels", "alertname"),
    ("alerts", 0, "labels", "job"),
    ("alerts", 0, "annotations"),
    ("alerts", 0, "startsAt"),
    ("alerts", 0, "endsAt"),
    ("alerts", 0, "generatorURL"),
    ("alerts", 0, "fingerprint"),
]

# Every code point, lone surrogates included (json.dumps writes them as \udXXX escapes), and often the
# characters that broke things: a lone surrogate, NUL, controls, '=' and non-ASCII letters.
NASTY = st.sampled_from(["\ud800", "\udfff", "\udbff", "\x00", "\x1b", "\n", "=", "\u212a", "\u00e9", "\U0001f600"])
# (st.text never yields a lone surrogate, whatever its alphabet: join the characters ourselves.)
ANY_TEXT = st.lists(NASTY | st.characters(exclude_categories=()), max_size=12).map("".join)
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | ANY_TEXT
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=8
)
# Header bytes the HTTP parser lets through (no controls): latin-1, invalid UTF-8, the token's prefix.
HEADER_BYTES = st.lists(st.integers(0x20, 0xFF).filter(lambda b: b != 0x7F), max_size=40).map(bytes) | st.builds(
    lambda tail: b"Bearer " + WEBHOOK_TOKEN.encode() + tail,
    st.binary(min_size=1, max_size=2).filter(lambda b: all(c >= 0x80 for c in b)),
)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def daemon(tmp_path: Path) -> Any:
    cfg = write_config(tmp_path, services={"rag": command_service(plan(tmp_path, sleep=600))})
    async with running_daemon(cfg) as d, aiohttp.ClientSession(d.url) as http:
        d.http = http
        yield d


def base() -> dict[str, Any]:
    return relabel(load_fixture("alertmanager-0.25-firing.json"), alertname="RAGGateFailRateHigh", service="rag")


def base_value(path: tuple[Any, ...]) -> Any:
    node: Any = base()
    for part in path:
        node = node[part]
    return node


def mutated(path: tuple[Any, ...], value: Any, delete: bool, fingerprint: int) -> bytes:
    payload = copy.deepcopy(base())
    payload["alerts"][0]["fingerprint"] = f"{fingerprint:016x}"  # fresh alerts, not only duplicates
    node: Any = payload
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(payload).encode()


async def intake_footprint(d: Any) -> tuple[int, int, int]:
    """What a webhook request writes: alerts, decision events, incidents (the runner of an incident an earlier
    example opened journals its own step events meanwhile: those are not the request's)."""
    store = d.core.store
    return (
        len(await store.recent_alerts(None, 1000)),
        len(await store.events(kinds=(EventKind.DECISION,), limit=1000)),
        len(await store.list_incidents(None, 1000)),
    )


async def check(d: Any, send: Any) -> None:
    before = await intake_footprint(d)
    status, body = await send
    assert status < 500, body
    if status != 202:
        assert await intake_footprint(d) == before, body


@SETTINGS
@given(path=st.sampled_from(PATHS), value=ANY_TEXT | JSON, delete=st.booleans(), fingerprint=st.integers(0, 2**64 - 1))
async def test_any_field_any_value(
    daemon: Any, path: tuple[Any, ...], value: Any, delete: bool, fingerprint: int
) -> None:
    await check(daemon, post(daemon, mutated(path, value, delete, fingerprint)))


@SETTINGS
@given(
    path=st.sampled_from([p for p in PATHS if isinstance(base_value(p), str)]),
    value=ANY_TEXT,
    fingerprint=st.integers(0, 2**64 - 1),
)
async def test_any_text_in_any_string_field(daemon: Any, path: tuple[Any, ...], value: str, fingerprint: int) -> None:
    await check(daemon, post(daemon, mutated(path, value, False, fingerprint)))


@SETTINGS
@given(raw=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
async def test_any_bytes(daemon: Any, raw: bytes) -> None:
    await check(daemon, post(daemon, raw))


@SETTINGS
@given(auth=HEADER_BYTES, ctype=HEADER_BYTES, fingerprint=st.integers(0, 2**64 - 1))
async def test_any_header_bytes(daemon: Any, auth: bytes, ctype: bytes, fingerprint: int) -> None:
    head = (
        b"POST /v1/webhook/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + auth
        + b"\r\nContent-Type: "
        + ctype
        + b"\r\n"
    )

    async def send() -> tuple[int, Any]:
        status, _, body = await raw_request(daemon, head, mutated(("version",), "4", False, fingerprint))
        return status, body

    await check(daemon, send())


async def test_the_valid_body_still_opens_one_incident(daemon: Any) -> None:
    """The properties above are not vacuous: the unmutated body is accepted and acts."""
    status, body = await post(daemon, mutated(("version",), "4", False, 1))
    assert status == 202 and body["decisions"][0]["reason"] == "rollback_rule"
    status, body = await post(
        daemon, mutated(("version",), "4", False, 1), token=None, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    )
    assert status == 202 and body["decisions"][0]["reason"] == "duplicate"
