"""Memory stays bounded: the webhook's cache of parsed bodies by the bytes it holds, the journal by
retention (alert and event rows past their age are pruned on schedule; incidents are kept)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from rollbackd.api.webhook import COST_PER_BODY_BYTE, SEEN, SeenBodies
from rollbackd.state import retention
from tests.integration.test_webhook_api import plan, post
from tests.support.bodies import many_alerts
from tests.support.daemon import command_service, running_daemon, write_config


def digest(n: int) -> bytes:
    return hashlib.blake2b(str(n).encode(), digest_size=16).digest()


def add_twice(cache: SeenBodies, n: int, size: int) -> None:
    cache.add(digest(n), [], size)  # the first time only the digest is kept
    cache.add(digest(n), [], size)


def test_the_cache_is_bounded_by_bytes_least_recently_used_first() -> None:
    cache = SeenBodies(max_bytes=10_000 * COST_PER_BODY_BYTE)
    for n in range(5):
        add_twice(cache, n, 3000)
        assert cache.size <= cache.max_bytes
    assert len(cache) == 3  # 3 x 3000 fit in 10,000; the two oldest went
    assert cache.get(digest(0)) is None and cache.get(digest(2)).alerts == []
    add_twice(cache, 5, 3000)  # 2 was used last: 3 goes, not 2
    assert cache.get(digest(2)).alerts == [] and cache.get(digest(3)) is None
    add_twice(cache, 6, 10_001)  # alone over the bound: never kept, nothing evicted for it
    assert cache.get(digest(6)) is None and len(cache) == 3
    assert cache.size == sum(3000 * COST_PER_BODY_BYTE for _ in range(3))


def test_the_cache_is_bounded_by_count_too() -> None:
    cache = SeenBodies(max_bytes=10**9, max_entries=2)
    for n in range(4):
        add_twice(cache, n, 10)
    assert len(cache) == 2 and cache.size == 20 * COST_PER_BODY_BYTE


def test_a_body_seen_once_costs_a_digest_not_a_parse() -> None:
    """A storm of distinct bodies keeps no parse: only the digests, themselves bounded (oldest first)."""
    cache = SeenBodies(max_bytes=10**9, max_entries=4)
    for n in range(100):
        cache.add(digest(n), [], 1000)
    assert len(cache) == 0 and cache.size == 0 and len(cache._once) == cache.max_once == 16
    cache.add(digest(99), [], 1000)  # its second time: kept from now on
    assert cache.get(digest(99)) is not None and len(cache._once) == 15
    cache.add(digest(0), [], 1000)  # forgotten as seen-once long ago: its first time again
    assert cache.get(digest(0)) is None


async def test_the_daemon_keeps_its_configured_bound(tmp_path: Path) -> None:
    limit = 3 * 1_048_576  # about one 1 MiB body, parsed
    cfg = write_config(
        tmp_path, services={"rag": command_service(plan(tmp_path, sleep=600))}, webhook={"body_cache_bytes": limit}
    )
    async with running_daemon(cfg) as d, aiohttp.ClientSession(d.url) as http:
        d.http = http
        seen = d._runner.app[SEEN]
        assert seen.max_bytes == limit
        for n in range(4):
            for _ in range(2):  # a parse is kept from a body's second time
                status, _ = await post(d, many_alerts(2000, seed=f"c{n}"))  # ~0.5 MiB each
                assert status == 202
                assert seen.size <= limit
        assert len(seen) == 2


async def test_retention_runs_on_schedule_and_keeps_incidents(tmp_path: Path, firing_payload: dict[str, Any]) -> None:
    cfg = write_config(
        tmp_path,
        services={"rag": command_service(plan(tmp_path))},
        journal_retention={"max_age": "2s", "interval": "1s"},
    )
    async with running_daemon(cfg) as d, aiohttp.ClientSession(d.url) as http:
        d.http = http
        assert retention.JOB in d.scheduler.jobs
        await post(d, json.dumps(firing_payload).encode())  # opens an incident: kept whatever its age
        await post(d, many_alerts(20, seed="r", service="nope"))  # unknown service: plain log rows
        resolved = json.loads(many_alerts(20, seed="r", service="nope"))
        for alert in resolved["alerts"]:
            alert["status"] = "resolved"
        await post(d, json.dumps(resolved).encode())
        store = d.core.store
        assert len(await store.recent_alerts(None, 100)) == 1 + 20 + 16  # 4 of the 20 were resolved already
        deadline = time.monotonic() + 20
        while len(await store.recent_alerts(None, 100)) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # the scheduled job prunes them once they are 2 s old
        (row,) = await store.recent_alerts(None, 100)
        assert row["incident_id"] is not None
        assert len(await store.list_incidents(None, 10)) == 1
        assert all(e.incident_id is not None for e in await store.events(limit=100))
