"""Long operations from the CLI (issue 11, points 3 and 6): `snapshot create` runs as a journaled job and
`snapshot restore` as an incident, both followed by short polls; a restore blocked by a lock fails naming the
blocker (exit 1, never "cannot reach rollbackd"); a restore made by hand is undone by `rollforward`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rollbackd.cli.main import main
from tests.integration.test_data_steps import bad_deploy, points
from tests.support.corpus import create_corpus, load_points, table_counts
from tests.support.daemon import Api, command_service, running_daemon, write_config
from tests.support.qdrant import QdrantTestServer

pytestmark = pytest.mark.integration


def config(tmp_path: Path, pg_dsn: str, qdrant_url: str) -> Path:
    service = command_service([{"type": "command", "argv": ["true"]}])
    service["snapshots"] = {
        "dir": str(tmp_path / "snaps"),
        "stores": {
            "postgres": {"type": "postgres", "dsn": pg_dsn, "lock_timeout": "1s"},
            "qdrant": {"type": "qdrant", "url": qdrant_url, "alias": "docs"},
        },
    }
    return write_config(tmp_path, services={"rag": service})


async def test_create_and_restore_are_followed_and_a_hand_restore_rolls_forward(
    pg_dsn: str, qdrant_server: QdrantTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_corpus(pg_dsn, docs=200)
    await load_points(qdrant_server.url, "docs_v1", dsn=pg_dsn, alias="docs")
    async with running_daemon(config(tmp_path, pg_dsn, qdrant_server.url)) as daemon:
        api = Api(daemon.url)
        flags = ["--url", daemon.url, "--token", api.token]
        assert await asyncio.to_thread(main, ["snapshot", "create", "--reason", "green", *flags]) == 0
        assert "snapshot set" in capsys.readouterr().out
        jobs = await daemon.core.store.events(service="rag", kinds=("job_started", "job_done"))
        assert sorted(e.kind for e in jobs) == ["job_done", "job_started"]
        job_id = jobs[0].data["job"]
        status, job = await asyncio.to_thread(api.call, "GET", f"/v1/snapshots/jobs/{job_id}?service=rag")
        assert status == 200 and job["state"] == "done" and job["result"]["id"]
        set_id = job["result"]["id"]
        await bad_deploy(pg_dsn, qdrant_server.url)
        code = await asyncio.to_thread(main, ["snapshot", "restore", set_id, "--reason", "bad deploy", "--yes", *flags])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "runs as incident" in out and "undo with `rollbackd rollforward" in out
        incident_id = out.split("runs as incident ")[1].split(";")[0]
        assert (await table_counts(pg_dsn))["docs"] == 200 and await points(qdrant_server.url) == 200
        # the hand restore is an incident: rollforward undoes it from the kept copies
        status, body = await asyncio.to_thread(
            api.call, "POST", f"/v1/incidents/{incident_id}/rollforward", {"reason": "the restore was a mistake"}
        )
        assert status in (200, 201, 202), body
        done = await asyncio.to_thread(api.wait_incident, body["id"], ("resolved", "failed"), 90)
        assert done["state"] == "resolved", done
        assert (await table_counts(pg_dsn))["docs"] == 230 and await points(qdrant_server.url) == 230


async def test_a_blocked_restore_fails_naming_the_blocker_not_unreachable(
    pg_dsn: str, qdrant_server: QdrantTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_corpus(pg_dsn, docs=200)
    await load_points(qdrant_server.url, "docs_v1", dsn=pg_dsn, alias="docs")
    async with running_daemon(config(tmp_path, pg_dsn, qdrant_server.url)) as daemon:
        api = Api(daemon.url)
        flags = ["--url", daemon.url, "--token", api.token]
        status, snap = await asyncio.to_thread(api.call, "POST", "/v1/snapshots", {"reason": "green"})
        assert status == 201, snap
        blocker: Any = await asyncpg.connect(pg_dsn, server_settings={"application_name": "migrate-v2"})
        try:
            await blocker.execute("BEGIN; LOCK TABLE docs IN ACCESS EXCLUSIVE MODE")
            code = await asyncio.to_thread(main, ["snapshot", "restore", snap["id"], "--reason", "r", "--yes", *flags])
        finally:
            await blocker.close()
        captured = capsys.readouterr()
        said = captured.out + captured.err
        assert code == 1, captured
        assert "waited too long" in said and "'migrate-v2'" in said and "LOCK TABLE docs" in said, said
        assert "cannot reach" not in said
        assert (await table_counts(pg_dsn))["docs"] == 200
