"""The observe job and a rollout's promotion both write the release registry after reading it. Run together
(the promotion's deploy made v2 run, the observe job woke in between), the registry must end with one live
record of v2, green, and nothing observed on top of it: found by the rollout e2e as v2 'superseded'."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rollbackd.deploy import BaselineOptions, DeployedRelease
from rollbackd.deploy.ledger import Ledger
from rollbackd.metrics import Metrics
from rollbackd.records import Release
from rollbackd.state.sqlite import SqliteStateStore

V2 = "sha256:" + "2" * 64


class SlowEngine:
    """A deployer whose inspect answers after the other writer had its turn (the race, made certain)."""

    resolves_images = False

    def __init__(self, version: str | None) -> None:
        self.version = version
        self.asked = asyncio.Event()

    async def current(self) -> DeployedRelease:
        self.asked.set()
        await asyncio.sleep(0.05)
        return DeployedRelease(version=self.version, image="rag:v2", image_id=V2)

    async def resolve(self, ref: str) -> str | None:
        return None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    s = SqliteStateStore(SqliteStateStore.Options(path=str(tmp_path / "s.db")))
    await s.open()
    yield s
    await s.close()


def ledger_of(store: SqliteStateStore, engine: SlowEngine) -> Ledger:
    return Ledger(
        service="rag",
        store=store,
        metrics=Metrics(["rag"]),
        prometheus=None,
        baseline=BaselineOptions(window=15.0),
        green_after=None,
        deployer=engine,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("label", ["v2", None], ids=["labelled image", "unlabelled image"])
async def test_observe_during_a_promotion_never_supersedes_it(store: SqliteStateStore, label: str | None) -> None:
    engine = SlowEngine(label)
    ledger = ledger_of(store, engine)
    await ledger.record(
        version="v1",
        image="rag:v1",
        digest="sha256:" + "1" * 64,
        config_digest=None,
        schema_version="1",
        source="pipeline",
        actor="ci",
        reason="deploy",
    )
    observing = asyncio.create_task(ledger.observe())
    await engine.asked.wait()  # the observe job looks at the engine, which runs v2 already
    promoted = Release(service="rag", version="v2", image="rag:v2", digest=V2, schema_version="1")
    await ledger.record_unless_live(promoted, source="pipeline", actor="rollbackd rollout", reason="rollout r1")
    await ledger.mark_green("v2", actor="rollbackd rollout", reason="every phase passed")
    await observing
    await ledger.observe()  # and once more afterwards: v2 is known

    history = await ledger.history()
    live = [r for r in history if r.status == "deployed"]
    assert [(r.version, r.digest, r.green) for r in live] == [("v2", V2, True)], history
    # the observe job may have recorded v2 first (under its label, or its digest when it has none), never after
    assert [r.version for r in history] in (["v2", "v1"], ["v2", "2" * 12, "v1"]), history


async def test_a_resumed_promotion_records_once(store: SqliteStateStore) -> None:
    ledger = ledger_of(store, SlowEngine("v2"))
    promoted = Release(service="rag", version="v2", image="rag:v2", digest=V2)
    first = await ledger.record_unless_live(promoted, source="pipeline", actor="rollbackd rollout", reason="r1")
    again = await ledger.record_unless_live(promoted, source="pipeline", actor="rollbackd rollout", reason="r1")
    assert first.id == again.id and len(await ledger.history()) == 1
    assert (first.source, first.recorded_by, first.status) == ("pipeline", "rollbackd rollout", "deployed")
