"""Fencing on real Postgres (rollbackd.ha): once another replica took the lease, every write that
carries the old token is refused inside its own transaction (the journal is left exactly as it was),
and a runner holding a stale token stops at its first write and says so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rollbackd.errors import FencedError
from rollbackd.ha import Identity
from rollbackd.ha.lease import PostgresLease
from rollbackd.reasons import IncidentState, StepState
from rollbackd.records import Event, Incident, Trigger, new_incident_id
from rollbackd.state import fence
from rollbackd.state.postgres import PostgresStateStore
from rollbackd.wiring import build_core
from tests.support.daemon import command_service, load_settings, write_config

A = Identity("replica-a", "host-a", 1, "127.0.0.1:1")
B = Identity("replica-b", "host-b", 2, "127.0.0.1:2")
TABLES = ("rb_incidents", "rb_steps", "rb_events", "rb_kv", "rb_pauses")


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresStateStore]:
    s = PostgresStateStore(PostgresStateStore.Options(dsn=pg_dsn))
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def lease(pg_dsn: str) -> AsyncIterator[PostgresLease]:
    lease = PostgresLease(pg_dsn, timeout=2)
    yield lease
    await lease.close()


def incident(service: str = "rag") -> Incident:
    return Incident(
        id=new_incident_id(),
        service=service,
        state=IncidentState.PENDING,
        dry_run=False,
        trigger=Trigger(kind="manual", reason="test", requested_by="t"),
        created_at=time.time(),
        plan=[{"type": "command", "name": "s1", "argv": ["true"]}],
    )


async def journal(dsn: str) -> dict[str, list[Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: sorted(map(tuple, await conn.fetch(f"SELECT * FROM {t}"))) for t in TABLES}
    finally:
        await conn.close()


async def expire(dsn: str) -> None:
    """The leader stopped renewing (SIGSTOP, cut): its lease runs out."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE rb_leader SET expires_at = 0")
    finally:
        await conn.close()


async def as_holder(token: int, write: Callable[[], Awaitable[Any]]) -> Any:
    reset = fence.current.set(token)
    try:
        return await write()
    finally:
        fence.current.reset(reset)


async def test_the_lease_is_renewed_by_its_holder_and_taken_only_when_expired(
    pg_dsn: str, store: PostgresStateStore, lease: PostgresLease
) -> None:
    first = await lease.acquire(A, 30, None)
    assert first is not None and first.token == 1 and first.previous is None
    renewed = await lease.acquire(A, 30, first.token)
    assert renewed is not None and (renewed.token, renewed.since) == (1, first.since)
    assert await lease.acquire(B, 30, None) is None  # held: B follows
    await expire(pg_dsn)
    taken = await lease.acquire(B, 30, None)
    assert taken is not None and taken.token == 2 and taken.previous == A.id
    assert await lease.acquire(A, 30, first.token) is None  # A's renewal with its old token: refused
    restarted = await lease.acquire(B, 30, None)  # B restarted (same id, no token): its own lease, new token
    assert restarted is not None and restarted.token == 3


async def test_every_write_of_a_stale_leader_is_refused_and_leaves_the_journal_as_it_was(
    pg_dsn: str, store: PostgresStateStore, lease: PostgresLease
) -> None:
    old = await lease.acquire(A, 30, None)
    assert old is not None
    inc = incident()
    await as_holder(old.token, lambda: store.create_incident(inc))
    await as_holder(old.token, lambda: store.transition(inc.id, (IncidentState.PENDING,), IncidentState.RUNNING))
    await as_holder(old.token, lambda: store.step_started(inc.id, 0, "s1", "command", 1, time.time()))
    await expire(pg_dsn)
    new = await lease.acquire(B, 30, None)
    assert new is not None and new.token == old.token + 1
    before = await journal(pg_dsn)
    writes: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.step_started(inc.id, 1, "s2", "command", 1, time.time()),
        lambda: store.step_finished(inc.id, 0, StepState.DONE, time.time(), {"ok": True}, None),
        lambda: store.transition(inc.id, (IncidentState.RUNNING,), IncidentState.RESOLVED, finished_at=time.time()),
        lambda: store.update_incident(inc.id, context={"saved": 1}),
        lambda: store.append_event(Event(kind="step_process", service="rag", incident_id=inc.id, data={})),
        lambda: store.set_kv("pages.pending", {"x": 1}),
    ]
    for write in writes:
        with pytest.raises(FencedError, match="stale"):
            await as_holder(old.token, write)
    assert await journal(pg_dsn) == before
    # the same write under the current token lands
    await as_holder(new.token, lambda: store.step_finished(inc.id, 0, StepState.DONE, time.time(), {}, None))
    assert (await store.steps(inc.id))[0].state is StepState.DONE


class Stale:
    """A leadership that believes it still leads under token 1 (it slept through its lease)."""

    leading = True
    token = 1
    replica_id = "replica-a"

    def holds(self, token: int | None) -> bool:
        return True  # by its own clock: it slept through the lease without noticing


async def test_a_runner_with_a_stale_token_stops_at_its_first_write_and_steps_down(
    tmp_path: Path, pg_dsn: str, lease: PostgresLease, caplog: pytest.LogCaptureFixture
) -> None:
    ran = tmp_path / "ran"
    cfg = write_config(
        tmp_path,
        services={
            "rag": command_service([{"type": "command", "name": "s1", "argv": ["/bin/sh", "-c", f"touch {ran}"]}])
        },
        state={"type": "postgres", "dsn": pg_dsn},
    )
    core = build_core(load_settings(cfg))
    await core.start()
    try:
        assert await lease.acquire(A, 30, None) is not None
        await expire(pg_dsn)
        assert await lease.acquire(B, 30, None) is not None  # token 2 now
        inc = incident()
        assert await core.store.create_incident(inc)
        said: list[str] = []

        async def fenced(detail: str, token: int | None) -> None:
            said.append(f"{token}: {detail}")

        core.runner.leadership = Stale()
        core.runner.on_fenced = fenced
        task = core.runner.start(inc.id)
        assert task is not None
        await asyncio.wait_for(task, 10)
        for _ in range(50):
            if said:
                break
            await asyncio.sleep(0.02)
    finally:
        await core.close()
    assert said and said[0].startswith("1: ") and "stale" in said[0]
    events = [r.msg for r in caplog.records]
    assert "incident_fenced" in events and "incident_crashed" not in events
    assert not ran.exists()  # the step never started: its start was not journaled
    rows = await journal(pg_dsn)
    assert rows["rb_steps"] == []
    assert [r[2] for r in rows["rb_incidents"]] == ["pending"]  # untouched: the new leader resumes it


async def test_a_follower_runs_nothing_it_journals(tmp_path: Path, pg_dsn: str) -> None:
    cfg = write_config(
        tmp_path,
        services={"rag": command_service([{"type": "command", "argv": ["true"]}])},
        state={"type": "postgres", "dsn": pg_dsn},
    )
    core = build_core(load_settings(cfg))
    await core.start()
    try:

        class Follower:
            leading = False
            token = None
            replica_id = "f"

            def holds(self, token: int | None) -> bool:
                return False

        core.runner.leadership = Follower()
        inc = incident()
        assert await core.store.create_incident(inc)
        assert core.runner.start(inc.id) is None
        assert await core.runner.adopt_active() == []
        assert (await core.store.get_incident(inc.id)).state is IncidentState.PENDING  # type: ignore[union-attr]
    finally:
        await core.close()


class EventsOnly:
    """The two journal calls resume_interrupted makes, over a list."""

    def __init__(self, events: list[Event]) -> None:
        self.events_ = events
        self.appended: list[Event] = []

    async def events(self, incident_id: str, kinds: tuple[str, ...]) -> list[Event]:
        return [e for e in self.events_ if e.kind in kinds]

    async def append_event(self, event: Event, *, bounded: bool = True) -> int:
        self.appended.append(event)
        return len(self.appended)


@pytest.mark.parametrize("host", ["elsewhere", None])
async def test_leftover_groups_are_killed_only_on_the_host_that_started_them(host: str | None) -> None:
    """A takeover on another host must not kill a local process that happens to have the pgid the old
    leader journaled there (it carries no marker of the step); a group journaled here (or before hosts were
    journaled) is killed."""
    import contextlib
    import os

    from rollbackd import procs
    from rollbackd.ha import HOST
    from rollbackd.incidents import leftovers
    from rollbackd.plan import build_plan
    from rollbackd.records import StepRecord

    inc = incident()
    marker = leftovers.marker(inc.id, 0)
    mark = {procs.MARKER_ENV: marker} if host is None else {}
    child = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True, env={**os.environ, **mark})
    try:
        # a leftover runs its program: until the exec, the child's environment is still this process's
        # (no marker), and a loaded machine can take a while to get there
        cmdline = Path(f"/proc/{child.pid}/cmdline")
        for _ in range(500):
            if cmdline.read_bytes().startswith(b"sleep"):
                break
            await asyncio.sleep(0.01)
        data: dict[str, Any] = {"index": 0, "step": "s1", "attempt": 1, "pgid": child.pid, "program": "sleep"}
        if host is not None:
            data["host"] = host
        journal = EventsOnly([Event(kind=leftovers.PROCESS, service="rag", incident_id=inc.id, data=data)])
        step = build_plan(inc.plan, "plan")[0][0]
        record = StepRecord(inc.id, 0, "s1", "command", StepState.STARTED, 1, time.time(), None, {}, None)
        await leftovers.resume_interrupted(journal, inc, step, 0, record, 1.0)  # type: ignore[arg-type]
        killed = journal.appended[0].data["killed"]
        if host is None:
            assert killed == [child.pid] and await asyncio.wait_for(child.wait(), 5) != 0
        else:
            assert killed == [] and child.returncode is None and host != HOST
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_journal_from_before_replicas_gains_the_lease_tables_on_open(
    tmp_path: Path, pg_dsn: str, kind: str
) -> None:
    from rollbackd.state.sqlite import SqliteStateStore

    def make() -> Any:
        if kind == "postgres":
            return PostgresStateStore(PostgresStateStore.Options(dsn=pg_dsn))
        return SqliteStateStore(SqliteStateStore.Options(path=str(tmp_path / "state.db")))

    old = make()
    await old.open()
    inc = incident()
    assert await old.create_incident(inc)
    await old._execute("DROP TABLE rb_leader")  # as the journal was before this version
    await old._execute("DROP TABLE rb_replicas")
    await old.close()
    store = make()
    await store.open()
    try:
        view = await store.replicas()
        assert view["leader"] is None and view["replicas"] == [] and view["now"] > 0
        assert (await store.get_incident(inc.id)) is not None
    finally:
        await store.close()
