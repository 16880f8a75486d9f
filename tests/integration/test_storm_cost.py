"""What a storm of distinct alerts costs the journal, counted on the real store of an in-process daemon
(SQLite): concurrent bodies share commits, a store error reaches every request of the failed batch,
notify-only and ignored alerts read nothing a decision reads, and the cached view follows every write."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.errors import StateError
from rollbackd.state.lanes import BULK
from tests.conftest import load_fixture, relabel
from tests.support.daemon import API_TOKEN, WEBHOOK_TOKEN, command_service, running_daemon, write_config

PATH = "/v1/webhook/alertmanager"
DECISION_READS = (
    "policy_view",
    "releases",
    "pauses",
    "active_incidents",
    "seen_alert",
    "events",
    "list_incidents",
    "get_incident",
    "get_kv",
)


def body(tag: str, alertname: str = "StormNoise", service: str = "rag") -> bytes:
    payload = relabel(load_fixture("alertmanager-0.25-firing.json"), alertname=alertname, service=service)
    for alert in payload["alerts"]:
        alert["fingerprint"] = tag
    return json.dumps(payload).encode()


def count_calls(store: Any, names: tuple[str, ...]) -> Counter[str]:
    """Wrap the store's methods on the instance: every call is counted, then passed on."""
    calls: Counter[str] = Counter()
    for name in names:
        real = getattr(store, name)

        async def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return await _real(*args, **kwargs)

        setattr(store, name, counted)
    return calls


@pytest.fixture
async def daemon(tmp_path: Path) -> Any:
    plan = [{"type": "command", "name": "busy", "argv": ["/bin/sleep", "0.5"]}]  # active while the test asks
    service = command_service(
        plan, rollback_alerts=["RAGGateFailRateHigh"], notify_alerts=["StormNoise"], ignore_alerts=["Ignored*"]
    )
    cfg = write_config(tmp_path, services={"rag": service})
    async with running_daemon(cfg) as d, aiohttp.ClientSession(d.url) as http:
        d.http = http
        yield d


async def post(d: Any, data: bytes) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    async with d.http.post(PATH, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def api(d: Any, path: str, payload: Any) -> int:
    async with d.http.post(path, json=payload, headers={"Authorization": f"Bearer {API_TOKEN}"}) as resp:
        return resp.status


async def test_concurrent_bodies_share_commits_and_every_202_is_journaled(daemon: Any) -> None:
    store = daemon.core.store
    calls = count_calls(store, ("journal_alerts",))
    tags = [f"share{n:04d}" for n in range(120)]
    answers = await asyncio.gather(*(post(daemon, body(tag)) for tag in tags))
    assert [status for status, _ in answers] == [202] * len(tags)
    rows = {r["fingerprint"] for r in await store.recent_alerts("rag", 1000)}
    assert set(tags) <= rows
    assert calls["journal_alerts"] < len(tags) / 2, calls  # one commit per batch, not per request


async def test_a_store_error_reaches_every_request_of_the_batch(daemon: Any) -> None:
    store = daemon.core.store
    real = store.journal_alerts

    async def failing(rows: Any) -> None:
        raise StateError("sqlite: disk I/O error")

    store.journal_alerts = failing
    tags = [f"fail{n:04d}" for n in range(30)]
    answers = await asyncio.gather(*(post(daemon, body(tag)) for tag in tags))
    assert [status for status, _ in answers] == [503] * len(tags)
    store.journal_alerts = real
    again = await asyncio.gather(*(post(daemon, body(tag)) for tag in tags))  # Alertmanager's retry
    assert [a["decisions"][0]["reason"] for _, a in again] == ["notify_rule"] * len(tags)
    assert set(tags) <= {r["fingerprint"] for r in await store.recent_alerts("rag", 1000)}


async def test_notify_only_and_ignored_alerts_read_nothing_a_decision_reads(daemon: Any) -> None:
    calls = count_calls(daemon.core.store, DECISION_READS)
    kinds = [("StormNoise", "rag"), ("IgnoredNoise", "rag"), ("StormNoise", "unknown-service")]
    answers = await asyncio.gather(*(post(daemon, body(f"cheap{n:04d}", *kinds[n % 3])) for n in range(60)))
    assert {a["decisions"][0]["reason"] for _, a in answers} == {"notify_rule", "not_in_policy", "unknown_service"}
    assert sum(calls.values()) == 0, calls


async def test_the_cached_view_follows_pause_resume_and_incidents(daemon: Any) -> None:
    calls = count_calls(daemon.core.store, ("policy_view",))

    async def decide(tag: str) -> str:
        status, answer = await post(daemon, body(tag, "RAGGateFailRateHigh"))
        assert status == 202, answer
        return str(answer["decisions"][0]["reason"])

    assert await api(daemon, "/v1/pause", {"service": "rag", "reason": "deploy freeze"}) in (200, 201)
    assert [await decide(f"paused{n}") for n in range(5)] == ["paused"] * 5
    assert calls["policy_view"] == 1  # read once, then from memory while nothing changed
    assert await api(daemon, "/v1/resume", {"service": "rag"}) == 200
    assert await decide("resumed") == "rollback_rule"  # the resume was seen at once, not after a TTL
    assert await decide("during") == "incident_active"  # so was the incident it opened
    assert calls["policy_view"] == 3


async def test_a_duplicate_is_not_answered_before_its_original_is_journaled(daemon: Any) -> None:
    store = daemon.core.store
    real = store.journal_alerts
    gate = asyncio.Event()

    async def slow_then_failing(rows: Any) -> None:
        await gate.wait()
        raise StateError("sqlite: disk I/O error")

    store.journal_alerts = slow_then_failing
    first = asyncio.create_task(post(daemon, body("dup0001")))
    await asyncio.sleep(0.3)  # decided, its commit in flight
    resent = asyncio.create_task(post(daemon, body("dup0001")))  # Alertmanager's HA peer, same alert
    await asyncio.sleep(0.3)
    assert not resent.done()  # a 202 now would claim a row that is not journaled
    gate.set()
    assert [(await first)[0], (await resent)[0]] == [503, 503]
    store.journal_alerts = real
    assert (await post(daemon, body("dup0001")))[0] == 202
    assert "dup0001" in {r["fingerprint"] for r in await store.recent_alerts("rag", 100)}


async def test_storm_batches_take_the_bulk_lane_and_an_actionable_body_does_not(daemon: Any) -> None:
    store = daemon.core.store
    lanes: list[tuple[str, str, bool]] = []
    for name in ("seen_alerts", "journal_alerts", "journal_alert", "policy_view"):
        real = getattr(store, name)

        async def recorded(*args: Any, _real: Any = real, _name: str = name) -> Any:
            first = args[0]
            tag = (
                first[0].split("|")[0]
                if _name == "seen_alerts" and first
                else first[0][0].fingerprint
                if _name == "journal_alerts"
                else first.fingerprint
                if _name == "journal_alert"
                else "view"
            )
            lanes.append((_name, tag, BULK.get()))
            return await _real(*args)

        setattr(store, name, recorded)
    await asyncio.gather(*(post(daemon, body(f"lane{n:03d}")) for n in range(20)))
    assert lanes and all(bulk for _, _, bulk in lanes), lanes
    lanes.clear()
    status, answer = await post(daemon, body("act0001", "RAGGateFailRateHigh"))
    assert status == 202 and answer["decisions"][0]["reason"] == "rollback_rule", answer
    assert {name for name, _, _ in lanes} >= {"seen_alerts", "journal_alert", "policy_view"}
    assert not any(bulk for _, _, bulk in lanes), lanes


async def test_an_alert_journaled_in_an_earlier_life_is_a_duplicate_found_by_the_insert(daemon: Any) -> None:
    store, intake = daemon.core.store, daemon.core.intake
    reads = count_calls(store, ("seen_alerts", "seen_alert"))
    status, first = await post(daemon, body("life0001"))
    assert status == 202 and first["decisions"][0]["reason"] == "notify_rule", first
    intake._seen.clear()  # as after a restart: the memory forgot, the journal did not
    again = json.loads(body("life0001"))
    again["groupKey"] = "another group"  # other bytes: parsed and decided afresh, not the body cache's
    status, second = await post(daemon, json.dumps(again).encode())
    assert status == 202 and second["decisions"][0]["reason"] == "duplicate", second
    assert sum(reads.values()) == 0  # firing alerts that cannot act: no read before the insert
    await intake.flush_duplicates()
    (row,) = [r for r in await store.recent_alerts("rag", 100) if r["fingerprint"] == "life0001"]
    assert (row["reason"], row["duplicates"]) == ("notify_rule", 1)  # kept as it was, counted once more
    lines = [e for e in await store.events(kinds=("decision",), limit=100) if e.data["fingerprint"] == "life0001"]
    assert len(lines) == 1  # one journal line: the duplicate wrote none


async def test_a_body_with_a_resolution_reads_before_it_decides(daemon: Any) -> None:
    reads = count_calls(daemon.core.store, ("seen_alerts",))
    resolved = json.loads(body("res0001"))
    for alert in resolved["alerts"]:
        alert["status"] = "resolved"
    status, answer = await post(daemon, json.dumps(resolved).encode())
    assert status == 202 and answer["decisions"][0]["status"] == "resolved", answer
    assert reads["seen_alerts"] == 1  # a resolution may cancel a pending rollback: decided on what is journaled
