"""The data rollback as the incident engine runs it, on real PostgreSQL and the Qdrant test server: two-phase
prepare (a Qdrant fault leaves Postgres live untouched and its prepared copy dropped), the plan steps with a
crash between prepare and swap, orphan copies discarded by retention, and the daemon's API and CLI."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from rollbackd.capabilities import Capabilities
from rollbackd.config import StepConfig
from rollbackd.errors import BackendError, FatalError
from rollbackd.plan import ServiceRuntime, StepContext, StepOptions
from rollbackd.reasons import IncidentState
from rollbackd.records import Incident, Trigger
from rollbackd.snapshots.dataset import DataSet
from rollbackd.snapshots.postgres import PostgresOptions, PostgresSnapshotter
from rollbackd.snapshots.qdrant import QdrantOptions, QdrantSnapshotter
from rollbackd.snapshots.retention import prune
from rollbackd.snapshots.steps import PrepareData, RollForwardData, SafetySnapshot, SwapData
from rollbackd.snapshots.store import SnapshotStore
from tests.support.corpus import change_corpus, create_corpus, load_points, table_counts
from tests.support.daemon import Api, command_service, running_daemon, secret_ref, write_config
from tests.support.pg import database_exists
from tests.support.qdrant import QdrantTestServer

pytestmark = pytest.mark.integration


async def points(url: str, name: str = "docs") -> int:
    from qdrant_client import AsyncQdrantClient

    client = AsyncQdrantClient(url=url, check_compatibility=False)
    try:
        return int((await client.get_collection(name)).points_count or 0)
    finally:
        await client.close()


@pytest.fixture
async def world(pg_dsn: str, qdrant_server: QdrantTestServer, tmp_path: Path) -> Any:
    await create_corpus(pg_dsn, docs=200)
    await load_points(qdrant_server.url, "docs_v1", dsn=pg_dsn, alias="docs")
    data = DataSet(
        service="rag",
        store=SnapshotStore(tmp_path / "store", "rag"),
        snapshotters={
            "postgres": PostgresSnapshotter(PostgresOptions(dsn=pg_dsn), name="postgres"),  # type: ignore[arg-type]
            "qdrant": QdrantSnapshotter(QdrantOptions(url=qdrant_server.url, alias="docs"), name="qdrant"),
        },
    )
    yield data
    await data.close()


async def bad_deploy(dsn: str, qdrant_url: str) -> None:
    await change_corpus(dsn)
    await load_points(qdrant_url, "docs_v2", dsn=dsn, alias="docs")


async def test_qdrant_fault_leaves_postgres_live_untouched(
    world: DataSet, pg_dsn: str, qdrant_server: QdrantTestServer
) -> None:
    snap = await world.create(reason="t")
    await bad_deploy(pg_dsn, qdrant_server.url)
    qdrant_server.inject_fault(r"/snapshots/upload$", method="POST", status=500, message="injected")
    with pytest.raises(BackendError, match="upload: 500 injected"):
        await world.prepare(snap.id)
    assert not [d for d in await world.snapshotters["postgres"].copies()]  # type: ignore[attr-defined]  # dropped
    assert (await table_counts(pg_dsn))["docs"] == 230 and await points(qdrant_server.url) == 230
    prepared = await world.prepare(snap.id)  # the same set prepares once Qdrant is healthy
    swapped = await world.swap(prepared, "inc-ok")
    assert (await table_counts(pg_dsn))["docs"] == 200 and await points(qdrant_server.url) == 200
    assert set(swapped) == {"postgres", "qdrant"}


async def test_a_failed_swap_puts_the_swapped_stores_back(
    world: DataSet, pg_dsn: str, qdrant_server: QdrantTestServer
) -> None:
    snap = await world.create(reason="t")
    await bad_deploy(pg_dsn, qdrant_server.url)
    prepared = await world.prepare(snap.id)
    qdrant_server.inject_fault(r"/collections/aliases$", method="POST", status=500, message="alias store down")
    with pytest.raises(FatalError, match=r"swap of qdrant failed: .*alias store down .*swapped back: postgres"):
        await world.swap(prepared, "inc-undo")
    assert (await table_counts(pg_dsn))["docs"] == 230 and await points(qdrant_server.url) == 230  # one pair


def make_ctx(
    data: DataSet, context: dict[str, Any], *, track: bool = False, incident_id: str = "20261122-031502-a1b2"
) -> StepContext:
    config: Any = type("Cfg", (), {"releases": type("R", (), {"track": track})()})()
    runtime = ServiceRuntime(name="rag", config=config, caps=Capabilities(snapshots=data))
    incident = Incident(
        id=incident_id,
        service="rag",
        state=IncidentState.RUNNING,
        trigger=Trigger(kind="manual", reason="test", requested_by="tester"),
        dry_run=False,
        created_at=0.0,
        plan=[],
        context=context,
    )

    async def save(key: str, value: Any) -> None:
        context[key] = value

    return StepContext(
        incident=incident,
        runtime=runtime,
        step_name="x",
        attempt=1,
        dry_run=False,
        outputs={},
        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
        save=save,
    )


def step(cls: Any) -> Any:
    return cls(StepConfig(type=cls.type), StepOptions())


async def test_steps_resume_after_a_crash_between_prepare_and_swap(
    world: DataSet, pg_dsn: str, qdrant_server: QdrantTestServer
) -> None:
    good = await world.create(reason="green")
    await bad_deploy(pg_dsn, qdrant_server.url)
    context: dict[str, Any] = {"target": None}
    ctx = make_ctx(world, context)
    safety = await step(SafetySnapshot).run(ctx)
    assert context["data_target"] == {"snapshot_set": good.id}  # chosen before the safety set existed
    assert safety["snapshot_set"] != good.id and await step(SafetySnapshot).is_done(ctx)
    out = await step(PrepareData).run(ctx)
    assert out["snapshot_set"] == good.id
    assert out["restored"]["postgres"]["expected"]["tables"]["public.docs"] == {"rows": 200}
    assert out["restored"]["qdrant"]["expected"] == {"collections": {"docs": 200}}
    assert out["restored"]["qdrant"]["collection"].startswith(f"docs__rb_{good.id}_")
    # the daemon dies here; after the restart fresh step objects read the journaled context
    ctx = make_ctx(world, dict(context))
    assert await step(PrepareData).is_done(ctx)
    assert not await step(SwapData).is_done(ctx)
    assert (await table_counts(pg_dsn))["docs"] == 230
    result = await step(SwapData).run(ctx)
    assert set(result["downtime_s"]) == {"postgres", "qdrant"}
    assert await step(SwapData).is_done(ctx)
    again = await step(SwapData).run(ctx)  # idempotent
    assert again["swapped"]["postgres"]["kept"].endswith("__pre_20261122_031502_a1b2")
    assert (await table_counts(pg_dsn))["docs"] == 200 and await points(qdrant_server.url) == 200
    safety_set = await world.get(safety["snapshot_set"])
    assert safety_set.manifests["postgres"]["tables"]["public.docs"]["rows"] == 230
    # roll-forward (a later incident) puts the data the rollback replaced back live
    original = ctx.incident

    class State:
        async def get_incident(self, incident_id: str) -> Incident | None:
            return original if incident_id == original.id else None

    world.state = State()  # type: ignore[assignment]
    rf = make_ctx(world, {"rollforward_of": original.id}, incident_id="20261122-050000-beef")
    assert not await step(RollForwardData).is_done(rf)
    out = await step(RollForwardData).run(rf)
    assert out["rolled_forward"]["postgres"]["kept"].endswith("__rf_20261122_050000_beef")
    assert await step(RollForwardData).is_done(rf)
    assert (await table_counts(pg_dsn))["docs"] == 230 and await points(qdrant_server.url) == 230


async def test_code_only_target_skips_data_steps(world: DataSet) -> None:
    ctx = make_ctx(world, {"target": {"version": "v1"}}, track=True)
    for cls in (SafetySnapshot, PrepareData, SwapData):
        assert await step(cls).run(ctx) == {"skipped": "code-only target"}
    assert await world.list() == []


async def test_prune_discards_orphan_copies(world: DataSet, pg_dsn: str) -> None:
    snap = await world.create(reason="t")
    prepared = await world.prepare(snap.id)  # then the incident is aborted: nobody swaps or discards
    result = await prune(world, keep_last=5)
    assert sorted(result["orphan_copies_dropped"]) == [
        f"postgres:{prepared['postgres']['database']}",
        f"qdrant:{prepared['qdrant']['collection']}",
    ]
    assert not await world.snapshotters["postgres"].is_prepared(prepared["postgres"])
    assert [k["id"] for k in result["kept"]] == [snap.id]


async def test_daemon_api_and_cli(
    pg_dsn: str, qdrant_server: QdrantTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rollbackd.cli.main import main

    await create_corpus(pg_dsn, docs=200)
    await load_points(qdrant_server.url, "docs_v1", dsn=pg_dsn, alias="docs")
    service = command_service([{"type": "snapshot.safety"}, {"type": "data.prepare"}, {"type": "data.swap"}])
    service["snapshots"] = {
        "dir": str(tmp_path / "snaps"),
        "retention": {"keep_last": 3},
        "stores": {
            "postgres": {
                "type": "postgres",
                "dsn": secret_ref("RAG_PG_DSN", pg_dsn),
                "schema_version_sql": "SELECT max(version) FROM schema_version",
            },
            "qdrant": {"type": "qdrant", "url": qdrant_server.url, "alias": "docs"},
        },
    }
    cfg = write_config(tmp_path, services={"rag": service})
    async with running_daemon(cfg) as daemon:
        api = Api(daemon.url)
        flags = ["--url", daemon.url, "--token", api.token]
        assert await asyncio.to_thread(main, ["snapshot", "create", "--reason", "before deploy", *flags]) == 0
        assert "snapshot set" in capsys.readouterr().out
        status, body = await asyncio.to_thread(api.call, "GET", "/v1/snapshots")
        assert status == 200 and len(body["snapshots"]) == 1
        set_id = body["snapshots"][0]["id"]
        assert body["snapshots"][0]["manifests"]["postgres"]["schema_version"] == "1"
        assert await asyncio.to_thread(main, ["snapshot", "list", *flags]) == 0
        assert set_id in capsys.readouterr().out
        await bad_deploy(pg_dsn, qdrant_server.url)
        assert (
            await asyncio.to_thread(main, ["snapshot", "restore", set_id, "--reason", "test", "--dry-run", *flags]) == 0
        )
        out = capsys.readouterr().out
        print(out)
        assert "this REPLACES" in out and "public.docs: 230 rows -> 200" in out and "230 points -> 200" in out
        assert (await table_counts(pg_dsn))["docs"] == 230  # a dry run changes nothing
        status, body = await asyncio.to_thread(api.call, "GET", "/v1/status")
        assert body["services"]["rag"]["snapshots"]["latest"]["id"] == set_id
        status, metrics = await asyncio.to_thread(api.call, "GET", "/metrics")
        assert b'rollbackd_snapshot_last_success_timestamp_seconds{service="rag",store="qdrant"}' in metrics
        # a manual rollback runs safety -> prepare -> swap through the incident engine
        status, inc = await asyncio.to_thread(api.call, "POST", "/v1/trigger", {"reason": "bad deploy"})
        assert status == 202, inc
        done = await asyncio.to_thread(api.wait_incident, inc["id"], ("resolved", "failed"), 90)
        assert done["state"] == "resolved", done
        assert (await table_counts(pg_dsn))["docs"] == 200 and await points(qdrant_server.url) == 200
        status, body = await asyncio.to_thread(
            api.call, "POST", "/v1/snapshots/prune", {"reason": "t", "dry_run": True}
        )
        assert status == 200 and body["deleted"] == []
        status, doc = await asyncio.to_thread(api.call, "GET", "/v1/openapi.json")
        assert "/v1/snapshots/{id}/restore" in doc["paths"]


async def test_api_restore_verify_and_adopt_alias(pg_dsn: str, qdrant_server: QdrantTestServer, tmp_path: Path) -> None:
    await create_corpus(pg_dsn, docs=200)
    await load_points(qdrant_server.url, "docs", dsn=pg_dsn)  # a plain collection: the app reads it by name
    service = command_service([{"type": "command", "argv": ["true"]}])
    service["snapshots"] = {
        "dir": str(tmp_path / "snaps"),
        "stores": {
            "postgres": {"type": "postgres", "dsn": secret_ref("RAG_PG_DSN", pg_dsn)},
            "qdrant": {"type": "qdrant", "url": qdrant_server.url, "alias": "docs"},
        },
    }
    cfg = write_config(tmp_path, services={"rag": service})
    async with running_daemon(cfg) as daemon:
        api = Api(daemon.url)

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            return await asyncio.to_thread(api.call, method, path, body)

        status, body = await call("POST", "/v1/snapshots/adopt-alias", {"reason": "read through an alias"})
        assert status == 200 and body["adopted"] and body["collection"] == "docs__v1", body
        status, snap = await call("POST", "/v1/snapshots", {"reason": "green"})
        assert status == 201 and snap["manifests"]["qdrant"]["collection"] == "docs__v1"
        assert (await call("POST", f"/v1/snapshots/{snap['id']}/verify", {}))[1]["verified"] is True
        assert (await call("POST", "/v1/snapshots/nope/verify", {}))[0] == 404
        await change_corpus(pg_dsn)
        status, body = await call("POST", f"/v1/snapshots/{snap['id']}/restore", {"reason": "bad deploy"})
        assert status == 202, body  # a restore runs as an incident the caller follows
        done = await asyncio.to_thread(api.wait_incident, body["incident"], ("resolved", "failed"), 90)
        assert done["state"] == "resolved", done
        swap = next(s for s in done["steps"] if s["name"] == "data.swap")["output"]
        print(f"API restore: downtime {swap['downtime_s']}")
        assert set(swap["downtime_s"]) == {"postgres", "qdrant"}
        assert next(s for s in done["steps"] if s["name"] == "snapshot.safety")["output"]["snapshot_set"]
        assert (await table_counts(pg_dsn))["docs"] == 200
        events = await daemon.core.store.events(service="rag", kinds=("snapshot_restore_started", "alias_adopt"))
        assert {(e.kind, e.actor, e.data["why"]) for e in events} == {
            ("snapshot_restore_started", "tester", "bad deploy"),
            ("alias_adopt", "tester", "read through an alias"),
        }
        # a corrupt set is refused before any safety snapshot, and nothing live changes
        victim = next(p for p in (tmp_path / "snaps" / snap["id"] / "postgres").rglob("*") if p.is_file())
        victim.write_bytes(victim.read_bytes() + b"x")
        await change_corpus(pg_dsn, junk=3, delete=[], rewrite=[])
        sets = len((await call("GET", "/v1/snapshots"))[1]["snapshots"])
        status, body = await call("POST", f"/v1/snapshots/{snap['id']}/restore", {"reason": "again"})
        assert status == 202, body
        failed = await asyncio.to_thread(api.wait_incident, body["incident"], ("resolved", "failed"), 90)
        assert failed["state"] == "failed" and "failed verification" in failed["error"], failed
        assert (await table_counts(pg_dsn))["docs"] == 203
        assert len((await call("GET", "/v1/snapshots"))[1]["snapshots"]) == sets
        status, body = await call("POST", "/v1/snapshots", {"reason": "x", "service": "nope"})
        assert status == 400 and body["field"] == "service"


async def test_daemon_killed_between_prepare_and_swap_resumes(
    pg_dsn: str, qdrant_server: QdrantTestServer, tmp_path: Path
) -> None:
    """SIGKILL while a step between prepare and swap runs; the restarted daemon finds prepare done (journal and
    world), re-runs the interrupted step, swaps the copies prepared before the crash."""
    from tests.support.daemon import DaemonProcess

    await create_corpus(pg_dsn, docs=200)
    await load_points(qdrant_server.url, "docs_v1", dsn=pg_dsn, alias="docs")
    go = tmp_path / "go"
    wait = {"type": "command", "name": "hold", "argv": ["sh", "-c", f"while [ ! -f {go} ]; do sleep 0.05; done"]}
    service = command_service([{"type": "snapshot.safety"}, {"type": "data.prepare"}, wait, {"type": "data.swap"}])
    service["snapshots"] = {
        "dir": str(tmp_path / "snaps"),
        "stores": {
            "postgres": {"type": "postgres", "dsn": secret_ref("RAG_PG_DSN", pg_dsn)},
            "qdrant": {"type": "qdrant", "url": qdrant_server.url, "alias": "docs"},
        },
    }
    cfg = write_config(tmp_path, services={"rag": service})
    proc = DaemonProcess(cfg)
    try:
        proc.start()
        status, snap = await asyncio.to_thread(proc.api.call, "POST", "/v1/snapshots", {"reason": "green"})
        assert status == 201, snap
        await bad_deploy(pg_dsn, qdrant_server.url)
        status, inc = await asyncio.to_thread(proc.api.call, "POST", "/v1/trigger", {"reason": "bad deploy"})
        assert status == 202, inc
        for _ in range(600):
            _, body = await asyncio.to_thread(proc.api.call, "GET", f"/v1/incidents/{inc['id']}")
            if any(s["name"] == "hold" for s in body.get("steps", [])):
                break
            await asyncio.sleep(0.05)
        prepared = next(s for s in body["steps"] if s["name"] == "data.prepare")["output"]["restored"]
        await asyncio.to_thread(proc.kill9)
        assert (await table_counts(pg_dsn))["docs"] == 230  # live untouched; the copies wait aside
        assert await database_exists(prepared["postgres"]["database"])
        go.write_text("")
        await asyncio.to_thread(proc.start)
        done = await asyncio.to_thread(proc.api.wait_incident, inc["id"], ("resolved", "failed"), 90)
        assert done["state"] == "resolved", done
        swap = next(s for s in done["steps"] if s["name"] == "data.swap")["output"]
        assert swap["swapped"]["postgres"]["restored"] == prepared["postgres"]["database"]
        assert (await table_counts(pg_dsn))["docs"] == 200 and await points(qdrant_server.url) == 200
    finally:
        go.write_text("")
        await asyncio.to_thread(proc.stop)


async def test_scheduled_snapshots_run_in_the_daemon(pg_dsn: str, tmp_path: Path) -> None:
    await create_corpus(pg_dsn, docs=50)
    service = command_service([{"type": "command", "argv": ["true"]}])
    service["snapshots"] = {
        "dir": str(tmp_path / "snaps"),
        "schedule": {"interval": "1s"},
        "stores": {"postgres": {"type": "postgres", "dsn": secret_ref("RAG_PG_DSN", pg_dsn)}},
    }
    cfg = write_config(tmp_path, services={"rag": service})
    async with running_daemon(cfg) as daemon:
        assert "snapshot:rag" in daemon.scheduler.jobs and "snapshot-retention:rag" in daemon.scheduler.jobs
        data = daemon.core.services["rag"].caps.snapshots
        for _ in range(400):
            if await data.list():
                break
            await asyncio.sleep(0.05)
        sets = await data.list()
        assert sets and sets[-1].reason == "scheduled"
        for _ in range(100):  # the journal line follows the snapshot
            if await daemon.core.store.events(service="rag", kinds=("snapshot",)):
                break
            await asyncio.sleep(0.05)
        assert (await daemon.core.store.events(service="rag", kinds=("snapshot",)))[0].actor == "scheduler"
