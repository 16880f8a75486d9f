"""The ReleaseStore Protocol of the state store (the release registry), on SQLite and the real PostgreSQL:
append-only history, statuses, green marks, baselines."""

from __future__ import annotations

from typing import Any

import pytest

from rollbackd.errors import NotFoundError
from rollbackd.records import Release
from rollbackd.state import ReleaseStore
from tests.contracts.state_stores import OnPostgres, OnSqlite

NOW = 1_800_000_000.0


def rel(version: str, **kw: Any) -> Release:
    return Release(
        service=kw.pop("service", "rag"),
        version=version,
        image=f"localhost/rag:{version}",
        digest=f"sha256:{version}",
        schema_version=kw.pop("schema", "1"),
        recorded_by="ci",
        live_at=kw.pop("live_at", NOW),
        **kw,
    )


class ReleaseRegistryContract:
    async def test_update_release_marks_green(self, store: ReleaseStore) -> None:
        r = await store.record_release(
            Release(service="rag", version="v1", image="app:v1", digest="sha256:ab", recorded_by="ci", live_at=NOW)
        )
        assert r.id is not None
        green = await store.update_release(r.id, green_at=NOW + 10, green_by="alice", green_reason="ok")
        assert green.green and [x.version for x in await store.releases("rag")] == ["v1"]

    async def test_recording_a_deployed_release_supersedes_the_live_one(self, store: Any) -> None:
        v1 = await store.record_release(rel("v1", live_at=NOW))
        v2 = await store.record_release(rel("v2", live_at=NOW + 60))
        other = await store.record_release(rel("x1", service="other"))
        history = await store.releases("rag")
        assert [(r.version, r.status) for r in history] == [("v2", "deployed"), ("v1", "superseded")]
        assert v2.id is not None and v1.id is not None and v2.id > v1.id
        assert (await store.releases("other"))[0].status == "deployed" and other.service == "other"
        changes = [(h["version"], h["change"]) for h in await store.release_history("rag")]
        assert changes == [("v2", "deployed"), ("v1", "superseded"), ("v1", "deployed")]

    async def test_every_field_round_trips(self, store: Any) -> None:
        r = await store.record_release(
            Release(
                service="rag",
                version="v7",
                image="reg/rag:v7",
                digest="sha256:abc",
                config_digest="sha256:cfg",
                schema_version="12",
                source="observed",
                recorded_by="rollbackd",
                live_at=NOW + 0.5,
            )
        )
        got = (await store.releases("rag"))[0]
        assert got == r
        assert (
            got.image,
            got.digest,
            got.config_digest,
            got.schema_version,
            got.source,
            got.recorded_by,
            got.live_at,
            got.status,
            got.green,
        ) == ("reg/rag:v7", "sha256:abc", "sha256:cfg", "12", "observed", "rollbackd", NOW + 0.5, "deployed", False)

    async def test_status_changes_green_and_baseline_are_appended_to_history(self, store: Any) -> None:
        v1 = await store.record_release(rel("v1"))
        green = await store.change_release(
            v1.id,
            change="green",
            actor="alice",
            note="looks good",
            ts=NOW + 5,
            green_at=NOW + 5,
            green_by="alice",
            green_reason="looks good",
            baseline_p95=0.42,
        )
        assert green.green and green.green_by == "alice" and green.baseline_p95 == 0.42
        assert green.status == "deployed"
        v2 = await store.record_release(rel("v2", live_at=NOW + 10))
        rolled = await store.change_release(
            v2.id, change="rolled_back", actor="rollbackd", note="incident i1", ts=NOW + 20
        )
        back = await store.change_release(
            v1.id, change="deployed", actor="rollbackd", note="incident i1", ts=NOW + 20, live_at=NOW + 20
        )
        assert rolled.status == "rolled_back" and back.status == "deployed" and back.live_at == NOW + 20
        history = await store.release_history("rag")
        assert [(h["version"], h["change"], h["actor"]) for h in history] == [
            ("v1", "deployed", "rollbackd"),
            ("v2", "rolled_back", "rollbackd"),
            ("v2", "deployed", "ci"),
            ("v1", "superseded", "ci"),
            ("v1", "green", "alice"),
            ("v1", "deployed", "ci"),
        ]
        assert history[-2]["note"] == "looks good" and history[-2]["ts"] == NOW + 5
        # the rows are history too: nothing was deleted
        assert [r.version for r in await store.releases("rag")] == ["v2", "v1"]

    async def test_failed_status_and_unknown_fields(self, store: Any) -> None:
        v1 = await store.record_release(rel("v1"))
        failed = await store.change_release(v1.id, change="failed", actor="ci", note="deploy failed", ts=NOW)
        assert failed.status == "failed"
        with pytest.raises(ValueError):
            await store.change_release(v1.id, change="green", actor="x", note="", ts=NOW, nonsense=1)
        with pytest.raises(NotFoundError):
            await store.change_release(999_999, change="green", actor="x", note="", ts=NOW)

    async def test_a_release_recorded_twice_keeps_both_records(self, store: Any) -> None:
        await store.record_release(rel("v1"))
        await store.record_release(rel("v2", live_at=NOW + 1))
        again = await store.record_release(rel("v1", live_at=NOW + 2))
        history = await store.releases("rag")
        assert [(r.version, r.status) for r in history] == [
            ("v1", "deployed"),
            ("v2", "superseded"),
            ("v1", "superseded"),
        ]
        assert history[0].id == again.id


class TestSqliteReleases(OnSqlite, ReleaseRegistryContract):
    pass


class TestPostgresReleases(OnPostgres, ReleaseRegistryContract):
    pass
