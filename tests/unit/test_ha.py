"""HA pieces without a server: the config (replicas need Postgres, the DSN from a credential file),
the replica's lease state machine against a scripted lease (renew, lose, fenced, expired while
paused), and the status lines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from rollbackd.errors import ConfigError, StateError
from rollbackd.ha import Identity, identity
from rollbackd.ha.lease import Grant
from rollbackd.ha.replica import Replica
from rollbackd.ha.view import render
from rollbackd.wiring import parse_settings as parse
from tests.unit.test_config import ENV, base

ME = Identity("a", "host", 1, "127.0.0.1:1")


def test_replicas_need_postgres() -> None:
    with pytest.raises(ConfigError) as exc:
        parse(yaml.safe_dump({**base(), "ha": {"replicas": 2}}), ENV)
    assert exc.value.problems == [
        "ha.replicas: 2 replicas need the postgres state store (state.type: postgres); sqlite is single node"
    ]


def test_the_dsn_comes_from_a_credential_file_and_the_lease_is_a_duration(tmp_path: Path) -> None:
    secret = tmp_path / "pg-dsn"
    secret.write_text("postgresql://rollbackd:s3cret@db1,db2/rollbackd?target_session_attrs=read-write\n")
    cfg = {**base(), "state": {"type": "postgres", "dsn_file": str(secret)}, "ha": {"replicas": 3, "lease": "12s"}}
    settings = parse(yaml.safe_dump(cfg), ENV)
    assert settings.state.options()["dsn"].startswith("postgresql://rollbackd:s3cret@")
    assert settings.ha.lease == 12.0 and settings.ha.replicas == 3


def test_a_kill_grace_that_outlives_the_takeover_margin_is_refused() -> None:
    """A leader stepping down has a third of its lease before another takes over: its steps' groups must be
    dead by then, or one step could run on two hosts at once."""
    cfg = {**base(), "state": {"type": "postgres", "dsn": "${PG}"}, "ha": {"replicas": 2, "lease": "6s"}}
    with pytest.raises(ConfigError) as exc:
        parse(yaml.safe_dump(cfg), {**ENV, "PG": "postgresql://postgres@127.0.0.1/x"})
    assert exc.value.problems == [
        "incidents.kill_grace: 3s must be shorter than a third of ha.lease (6s), "
        "or a step could outlive its replica's lease"
    ]
    ok = {**cfg, "incidents": {"kill_grace": "1s"}}
    assert parse(yaml.safe_dump(ok), {**ENV, "PG": "postgresql://postgres@127.0.0.1/x"}).incidents.kill_grace == 1.0


def test_default_identity_is_host_and_port() -> None:
    me = identity(None, "0.0.0.0:8085")
    assert me.id.endswith(":8085") and me.id.startswith(me.host)
    assert identity("rb-1", "0.0.0.0:8085").id == "rb-1"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Script:
    """A lease whose answers the test sets: a Grant, None (held by another) or an exception."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.answer: Grant | Exception | None = None
        self.released: list[int] = []
        self.clock = clock
        self.cost = 0.0  # how long an answer takes (a timeout on a cut link)

    async def acquire(self, me: Identity, lease: float, token: int | None) -> Grant | None:
        if self.clock is not None:
            self.clock.now += self.cost
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def heartbeat(self, me: Identity, leader_since: float | None) -> None:
        return None

    async def release(self, me: Identity, token: int) -> None:
        self.released.append(token)

    async def leave(self, me: Identity) -> None:
        return None

    async def close(self) -> None:
        return None


def replica(script: Script, clock: Clock, said: list[str]) -> Replica:
    async def lead(grant: Grant) -> None:
        said.append(f"lead {grant.token} after {grant.previous}")

    async def follow(why: str) -> None:
        said.append(f"follow: {why}")

    return Replica(ME, script, lease=3.0, on_lead=lead, on_follow=follow, clock=clock)


def test_leads_renews_and_steps_down_when_another_holds_the_lease() -> None:
    script, clock, said = Script(), Clock(), []  # type: ignore[var-annotated]
    r = replica(script, clock, said)

    async def go() -> None:
        await r.tick()
        assert not r.leading
        script.answer = Grant(token=4, since=1.0, previous="b")
        await r.tick()
        await r.tick()  # a renewal: no second election
        assert r.leading and r.token == 4
        script.answer = None
        await r.tick()

    asyncio.run(go())
    assert said == ["lead 4 after b", "follow: another replica holds the lease"]
    assert not r.leading


def test_steps_down_when_the_lease_cannot_be_renewed_in_time_or_a_write_was_fenced() -> None:
    clock, said = Clock(), []  # type: ignore[var-annotated]
    script = Script(clock)
    r = replica(script, clock, said)

    async def go() -> None:
        script.answer = Grant(token=1, since=1.0, previous=None)
        await r.tick()
        script.answer = StateError("cut")
        clock.now += 1.0  # within two thirds of the lease: still leads
        await r.tick()
        assert r.leading
        script.cost = 1.5  # the next renewal times out past two thirds of the lease
        await r.tick()
        script.cost = 0.0
        assert not r.leading
        script.answer = Grant(token=2, since=9.0, previous="a")
        await r.tick()
        await r.fenced("fenced: an earlier term", 1)  # a task of the term before: ignored
        assert r.leading
        await r.fenced("fenced: stale", 2)
        clock.now += 60  # woken after SIGSTOP: steps down before it even asks
        script.answer = Grant(token=3, since=9.0, previous="a")
        await r.tick()

    asyncio.run(go())
    assert said == [
        "lead 1 after None",
        "follow: cannot renew the lease: cut",
        "lead 2 after a",
        "follow: fenced: stale",
        "lead 3 after a",
    ]


def test_holds_answers_by_the_local_bound_before_the_loop_has_noticed() -> None:
    """A step's thread asks ``holds`` before each engine call: it turns false the moment the local bound
    passes (woken from SIGSTOP), before any tick or watch has run, and for any other term's token."""
    clock, said = Clock(), []  # type: ignore[var-annotated]
    script = Script(clock)
    r = replica(script, clock, said)

    async def go() -> None:
        script.answer = Grant(token=7, since=1.0, previous=None)
        await r.tick()

    asyncio.run(go())
    assert r.holds(7) and not r.holds(6) and not r.holds(None)
    clock.now += 1.9  # within two thirds of the 3 s lease
    assert r.holds(7)
    clock.now += 0.2  # past it, nothing has run yet: still "leading", but the lease may be gone
    assert r.leading and not r.holds(7)


def test_a_clean_stop_hands_the_lease_over() -> None:
    script, clock, said = Script(), Clock(), []  # type: ignore[var-annotated]
    r = replica(script, clock, said)
    script.answer = Grant(token=7, since=1.0, previous=None)
    asyncio.run(r.tick())
    asyncio.run(r.stop())
    assert script.released == [7] and not r.leading


def test_status_lines_name_the_leader_and_each_heartbeat() -> None:
    ha = {
        "this_replica": "h1:8085",
        "this_replica_leads": True,
        "leader": "h1:8085",
        "leader_since": "2026-12-04T20:00:00Z",
        "lease_expires_in_s": 8.2,
        "fence": 3,
        "replicas": [
            {
                "id": "h1:8085",
                "host": "h1",
                "pid": 10,
                "listen": "0.0.0.0:8085",
                "started_at": None,
                "last_heartbeat_s_ago": 0.4,
                "leads": True,
                "leader_since": None,
            },
            {
                "id": "h2:8085",
                "host": "h2",
                "pid": 11,
                "listen": "0.0.0.0:8085",
                "started_at": None,
                "last_heartbeat_s_ago": 31.0,
                "leads": False,
                "leader_since": None,
            },
        ],
    }
    lines = render(ha)
    assert lines[0].startswith("leader:       h1:8085 since 2026-12-04T20:00:00Z")
    assert "LEADER" in lines[1] and "heartbeat 0.4s ago" in lines[1]
    assert "h2:8085" in lines[2] and "heartbeat 31.0s ago" in lines[2] and "LEADER" not in lines[2]
    assert render({"this_replica": "single", "replicas": []}) == ["replicas:     single node (single), leads"]


def test_scheduled_jobs_run_only_while_this_replica_leads() -> None:
    from rollbackd.scheduler import Schedule, Scheduler

    leading = {"now": False}
    runs: list[bool] = []

    async def job() -> None:
        runs.append(leading["now"])

    async def go() -> None:
        scheduler = Scheduler(gate=lambda: leading["now"])
        scheduler.add("job", Schedule(interval=1), job)
        scheduler.start()
        try:
            await asyncio.sleep(2.3)  # two firings as a follower: skipped
            leading["now"] = True
            for _ in range(40):
                if runs:
                    break
                await asyncio.sleep(0.1)
        finally:
            scheduler.stop()

    asyncio.run(go())
    assert runs and all(runs)


def test_a_renewal_hanging_on_a_dead_link_does_not_keep_a_stale_leader_leading() -> None:
    clock, said = Clock(), []  # type: ignore[var-annotated]
    script = Script(clock)
    r = replica(script, clock, said)
    hang = asyncio.Event()

    async def hanging(me: Identity, lease: float, token: int | None) -> Grant | None:
        await hang.wait()
        return Grant(token=1, since=1.0, previous=None)  # the late answer of the renewal

    async def go() -> None:
        script.answer = Grant(token=1, since=1.0, previous=None)
        await r.tick()
        script.acquire = hanging  # type: ignore[method-assign]
        renewal = asyncio.create_task(r.tick())
        await asyncio.sleep(0)
        clock.now += 2.5  # past two thirds of the 3 s lease, the renewal still unanswered
        await asyncio.wait_for(r.expire(), 1)  # the watch is not blocked by the hanging renewal
        assert not r.leading
        hang.set()
        await renewal  # its late answer belongs to the term that ended: not applied
        assert not r.leading

    asyncio.run(go())
    assert said == ["lead 1 after None", "follow: lease expired before it could be renewed"]
