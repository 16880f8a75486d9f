"""Nothing live is ever deleted (issue 11, point 1): retention, prune, a second prepare of the same set and a
drill's teardown ask the server (Qdrant's aliases, Postgres's live database) before any drop, and
restore-aside copies get fresh names that never collide with a live or kept one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from rollbackd.errors import FatalError
from rollbackd.snapshots.dataset import DataSet
from rollbackd.snapshots.retention import prune
from tests.integration import test_data_steps
from tests.integration.test_data_steps import bad_deploy, points
from tests.support.corpus import create_corpus, load_points, table_counts
from tests.support.daemon import Api, command_service, running_daemon, write_config
from tests.support.pg import database_exists, db_name
from tests.support.poller import Poller
from tests.support.qdrant import QdrantTestServer

world = test_data_steps.world

pytestmark = pytest.mark.integration


async def aliases(url: str) -> dict[str, str]:
    from qdrant_client import AsyncQdrantClient

    client = AsyncQdrantClient(url=url, check_compatibility=False)
    try:
        return {a.alias_name: a.collection_name for a in (await client.get_aliases()).aliases}
    finally:
        await client.close()


async def test_restore_prune_and_scheduled_retention_leave_the_alias_serving(
    pg_dsn: str, qdrant_server: QdrantTestServer, tmp_path: Path
) -> None:
    await create_corpus(pg_dsn, docs=200)
    await load_points(qdrant_server.url, "docs_v1", dsn=pg_dsn, alias="docs")
    service = command_service([{"type": "command", "argv": ["true"]}])
    service["snapshots"] = {
        "dir": str(tmp_path / "snaps"),
        "retention": {"keep_last": 3, "schedule": {"interval": "1s"}},
        "stores": {
            "postgres": {"type": "postgres", "dsn": pg_dsn},
            "qdrant": {"type": "qdrant", "url": qdrant_server.url, "alias": "docs"},
        },
    }
    cfg = write_config(tmp_path, services={"rag": service})
    async with running_daemon(cfg) as daemon:
        api = Api(daemon.url)

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            return await asyncio.to_thread(api.call, method, path, body)

        status, snap = await call("POST", "/v1/snapshots", {"reason": "green"})
        assert status == 201, snap
        await bad_deploy(pg_dsn, qdrant_server.url)
        status, body = await call("POST", f"/v1/snapshots/{snap['id']}/restore", {"reason": "bad deploy"})
        assert status == 202, body
        done = await asyncio.to_thread(api.wait_incident, body["incident"], ("resolved", "failed"), 90)
        assert done["state"] == "resolved", done
        live = (await aliases(qdrant_server.url))["docs"]
        assert live.startswith(f"docs__rb_{snap['id']}_")
        status, pruned = await call("POST", "/v1/snapshots/prune", {"reason": "tidy"})
        assert status == 200 and pruned["orphan_copies_dropped"] == [], pruned
        await asyncio.sleep(3.5)  # at least two scheduled retention runs (interval 1 s)
        found = await aliases(qdrant_server.url)
        assert found["docs"] == live and await points(qdrant_server.url) == 200
        assert found[f"docs__kept_{body['incident'].replace('-', '_')}"] == "docs_v2"  # the replaced one is kept
        assert (await table_counts(pg_dsn))["docs"] == 200
        # a later restore is not refused: the alias is intact
        status, again = await call("POST", f"/v1/snapshots/{snap['id']}/restore", {"reason": "again"})
        assert status == 202, again
        done = await asyncio.to_thread(api.wait_incident, again["incident"], ("resolved", "failed"), 90)
        assert done["state"] == "resolved", done


async def test_the_same_set_restored_twice_never_fails_a_reader(
    world: DataSet,
    pg_dsn: str,
    qdrant_server: QdrantTestServer,
) -> None:
    good = await world.create(reason="green")
    await bad_deploy(pg_dsn, qdrant_server.url)
    port = urlsplit(qdrant_server.url).port
    assert port is not None
    with Poller(port, "/collections/docs") as reader:  # every 20 ms through the alias
        first = await world.restore(good.id, "20261122-031502-a1b2")
        second = await world.restore(good.id, "20261122-031600-c3d4")
    assert reader.failures == 0 and len(reader.ok_at) > 10
    copies = (first["restored"]["qdrant"]["collection"], second["restored"]["qdrant"]["collection"])
    assert copies[0] != copies[1]
    assert second["swapped"]["qdrant"]["kept"] == copies[0]  # the first restore's copy is kept, not deleted
    found = await aliases(qdrant_server.url)
    assert found["docs"] == copies[1] and found["docs__kept_20261122_031600_c3d4"] == copies[0]
    assert first["restored"]["postgres"]["database"] != second["restored"]["postgres"]["database"]
    assert await points(qdrant_server.url) == 200 and (await table_counts(pg_dsn))["docs"] == 200
    # retention neither takes the live copy nor the kept one for an orphan
    result = await prune(world, keep_last=5)
    assert result["orphan_copies_dropped"] == []
    assert (await aliases(qdrant_server.url))["docs"] == copies[1]


async def test_a_drill_after_a_rollback_of_the_same_set_leaves_live_alone(
    world: DataSet, pg_dsn: str, qdrant_server: QdrantTestServer
) -> None:
    good = await world.create(reason="green")
    await bad_deploy(pg_dsn, qdrant_server.url)
    await world.restore(good.id, "20261122-031502-a1b2")
    live = (await aliases(qdrant_server.url))["docs"]
    # what the drill does with the data: prepare the same set aside, then discard it in teardown
    scratch = await world.prepare(good.id)
    assert scratch["qdrant"]["collection"] != live
    assert await world.discard(scratch) == ["postgres", "qdrant"]
    assert (await aliases(qdrant_server.url))["docs"] == live and await points(qdrant_server.url) == 200
    assert (await table_counts(pg_dsn))["docs"] == 200


async def test_deletion_asks_the_server_not_the_name(
    world: DataSet,
    pg_dsn: str,
    qdrant_server: QdrantTestServer,
) -> None:
    good = await world.create(reason="green")
    prepared = await world.prepare(good.id)
    qdrant, postgres = world.snapshotters["qdrant"], world.snapshotters["postgres"]
    # a copy an alias reads (here: someone pointed a second alias at it) is never deleted
    from qdrant_client import AsyncQdrantClient, models

    client = AsyncQdrantClient(url=qdrant_server.url, check_compatibility=False)
    try:
        await client.update_collection_aliases(
            change_aliases_operations=[
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(
                        collection_name=prepared["qdrant"]["collection"], alias_name="docs_preview"
                    )
                )
            ]
        )
    finally:
        await client.close()
    with pytest.raises(FatalError, match="docs_preview point at it"):
        await qdrant.discard(prepared["qdrant"])
    with pytest.raises(FatalError, match="docs point at it"):
        await qdrant.discard({"collection": "docs_v1"})
    assert "docs_v1" in await qdrant.http.collections()  # type: ignore[attr-defined]
    assert prepared["qdrant"]["collection"] not in await qdrant.copies()  # type: ignore[attr-defined]
    live = db_name(pg_dsn)
    for name in (live, "postgres", f"other_{live}"):
        with pytest.raises(FatalError, match="refusing to drop database"):
            await postgres.discard({"database": name})
    assert await database_exists(live) and (await table_counts(pg_dsn))["docs"] == 200
    await postgres.discard(prepared["postgres"])
    assert not await database_exists(prepared["postgres"]["database"])


async def test_a_refused_restore_takes_no_safety_snapshot(qdrant_server: QdrantTestServer, tmp_path: Path) -> None:
    """ "alias is a collection" is refused before any safety snapshot or restore-aside copy is made."""
    from rollbackd.snapshots.qdrant import QdrantOptions, QdrantSnapshotter
    from rollbackd.snapshots.store import SnapshotStore

    await load_points(qdrant_server.url, "docs", count=30)  # a plain collection, no alias
    data = DataSet(
        service="rag",
        store=SnapshotStore(tmp_path / "store", "rag"),
        snapshotters={"qdrant": QdrantSnapshotter(QdrantOptions(url=qdrant_server.url, alias="docs"), name="qdrant")},
    )
    try:
        good = await data.create(reason="green")
        for attempt in range(3):
            with pytest.raises(FatalError, match="is a collection, not an alias"):
                await data.restore(good.id, f"20261122-03150{attempt}-a1b2")
        assert [s.id for s in await data.list()] == [good.id]  # no safety snapshots piled up
        assert await data.snapshotters["qdrant"].copies() == []  # type: ignore[attr-defined]
    finally:
        await data.close()


async def test_untracked_releases_restore_the_good_set_not_a_safety_snapshot(
    world: DataSet, pg_dsn: str, qdrant_server: QdrantTestServer
) -> None:
    from rollbackd.snapshots.steps import SafetySnapshot
    from tests.integration.test_data_steps import make_ctx, step

    good = await world.create(reason="green")
    await bad_deploy(pg_dsn, qdrant_server.url)
    first = await world.restore(good.id, "20261122-031502-a1b2")  # leaves a safety set of the damage
    assert (await world.list())[0].id == first["safety_snapshot"]
    context: dict[str, Any] = {"target": None}
    await step(SafetySnapshot).run(make_ctx(world, context, incident_id="20261122-040000-beef"))
    assert context["data_target"] == {"snapshot_set": good.id}


async def test_kept_copies_fall_under_retention_and_are_listed(
    world: DataSet,
    pg_dsn: str,
    qdrant_server: QdrantTestServer,
) -> None:
    from rollbackd.snapshots.retention import kept_copies

    good = await world.create(reason="green")
    world.safety_snapshot = False
    tags = ["20261122-031502-a1b2", "20261122-031600-c3d4", "20261122-031700-e5f6"]
    for tag in tags:
        await world.restore(good.id, tag)
    listed = await kept_copies(world)
    assert [k["tag"] for k in listed["postgres"]] == [t.replace("-", "_") for t in reversed(tags)]
    assert len(listed["qdrant"]) == 3
    result = await prune(world, keep_last=5, keep_kept=1)
    assert len(result["kept_copies_dropped"]) == 4, result
    listed = await kept_copies(world)
    assert [k["name"] for k in listed["postgres"]] == [f"{db_name(pg_dsn)}__pre_20261122_031700_e5f6"]
    assert [k["tag"] for k in listed["qdrant"]] == ["20261122_031700_e5f6"]
    live = (await aliases(qdrant_server.url))["docs"]
    assert live not in [k["name"] for k in listed["qdrant"]]
    assert await points(qdrant_server.url) == 200 and (await table_counts(pg_dsn))["docs"] == 200


async def test_every_alias_of_the_live_collection_is_switched_and_switched_back(
    world: DataSet, pg_dsn: str, qdrant_server: QdrantTestServer
) -> None:
    from qdrant_client import AsyncQdrantClient, models

    good = await world.create(reason="green")
    await bad_deploy(pg_dsn, qdrant_server.url)
    client = AsyncQdrantClient(url=qdrant_server.url, check_compatibility=False)
    try:  # a second reader of the same collection (another app, a dashboard)
        await client.update_collection_aliases(
            change_aliases_operations=[
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name="docs_v2", alias_name="docs_read")
                )
            ]
        )
    finally:
        await client.close()
    done = await world.restore(good.id, "20261122-031502-a1b2")
    found = await aliases(qdrant_server.url)
    assert found["docs"] == found["docs_read"] == done["restored"]["qdrant"]["collection"]
    assert done["swapped"]["qdrant"]["aliases"] == ["docs", "docs_read"]
    assert await points(qdrant_server.url, "docs_read") == 200
    await world.roll_forward(done["swapped"], "20261122-040000-beef")
    found = await aliases(qdrant_server.url)
    assert found["docs"] == found["docs_read"] == "docs_v2"
    assert found["docs__kept_20261122_040000_beef"] == done["restored"]["qdrant"]["collection"]
    assert "docs__kept_20261122_031502_a1b2" not in found  # docs_v2 is live again, no longer a kept copy


async def test_a_snapshot_directory_that_cannot_be_written_names_the_path_and_errno(
    pg_dsn: str, qdrant_server: QdrantTestServer, tmp_path: Path
) -> None:
    await create_corpus(pg_dsn, docs=20)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the snapshot directory's parent should be")
    service = command_service([{"type": "command", "argv": ["true"]}])
    service["snapshots"] = {"dir": str(blocker / "snaps"), "stores": {"postgres": {"type": "postgres", "dsn": pg_dsn}}}
    async with running_daemon(write_config(tmp_path, services={"rag": service})) as daemon:
        status, body = await asyncio.to_thread(Api(daemon.url).call, "POST", "/v1/snapshots", {"reason": "x"})
    assert status == 502, body
    assert str(blocker) in body["detail"] and "ENOTDIR" in body["detail"] and "errno 20" in body["detail"], body
