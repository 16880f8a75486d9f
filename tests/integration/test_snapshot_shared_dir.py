"""With replicas, `snapshots.dir` must be storage every replica shares: the leader that rolls back may
not be the one that took the set. A replica that takes the lead and cannot find the newest set the
journal says was taken says so at once (log line and Slack), not at the rollback."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from rollbackd.notify import Message
from rollbackd.snapshots import plugin
from tests.integration.test_snapshot_cli_jobs import config
from tests.support.corpus import create_corpus, load_points
from tests.support.daemon import Api, running_daemon
from tests.support.qdrant import QdrantTestServer

pytestmark = pytest.mark.integration


async def test_a_leader_without_the_newest_journaled_set_says_the_dir_is_not_shared(
    pg_dsn: str, qdrant_server: QdrantTestServer, tmp_path: Path
) -> None:
    await create_corpus(pg_dsn, docs=20)
    await load_points(qdrant_server.url, "docs_v1", dsn=pg_dsn, alias="docs")
    async with running_daemon(config(tmp_path, pg_dsn, qdrant_server.url)) as daemon:
        status, snap = await asyncio.to_thread(Api(daemon.url).call, "POST", "/v1/snapshots", {"reason": "green"})
        assert status == 201, snap
        posted: list[Message] = []
        daemon.core.notify.post = posted.append
        await plugin.lead(daemon.core)
        assert posted == []  # the set is here
        shutil.move(tmp_path / "snaps", tmp_path / "the-other-hosts-snaps")  # as on a replica with its own dir
        (tmp_path / "snaps").mkdir()
        await plugin.lead(daemon.core)
    (message,) = posted
    assert message.kind == "escalation" and message.severity == "danger" and message.service == "rag"
    assert snap["id"] in message.title and str(tmp_path / "snaps") in message.title
    assert "must be storage every replica shares" in message.text
