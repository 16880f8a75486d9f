"""The Step contract: every step type (STEP_TYPES) has a subclass of StepContract here, which builds the
step and a context in a world where it has work to do. Each must: be registered under its type, describe
itself in one line, say it is not done before it ran (``is_done`` asks the world), return a JSON output,
say it is done after it ran, and run again without harm (idempotent: the world and ``is_done`` unchanged).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from rollbackd.capabilities import Capabilities
from rollbackd.config import StepConfig
from rollbackd.deploy import BaselineOptions
from rollbackd.deploy.command import CommandDeployer
from rollbackd.deploy.ledger import Ledger
from rollbackd.metrics import Metrics
from rollbackd.plan import STEP_TYPES, ServiceRuntime, StepContext, build_plan
from rollbackd.reasons import IncidentState
from rollbackd.records import Incident, Release, Trigger
from rollbackd.registry import load_class
from rollbackd.snapshots.dataset import DataSet
from rollbackd.snapshots.postgres import PostgresOptions, PostgresSnapshotter
from rollbackd.snapshots.qdrant import QdrantOptions, QdrantSnapshotter
from rollbackd.snapshots.store import SnapshotStore
from rollbackd.state.sqlite import SqliteStateStore
from rollbackd.traffic.command import CommandTrafficSwitch
from rollbackd.verify.suite import VerifySuite
from tests.integration.test_data_steps import bad_deploy, make_ctx, points
from tests.support.corpus import create_corpus, load_points, table_counts
from tests.support.http_stub import JsonHandler, serve
from tests.support.qdrant import QdrantTestServer
from tests.unit.test_verify import Scripted


@dataclass
class Case:
    step: Any
    ctx: StepContext
    world: Any = None  # what the step changes, for the idempotence check (a callable returning a snapshot)


def context(
    runtime: ServiceRuntime,
    saved: dict[str, Any],
    incident_id: str = "20261122-031502-a1b2",
    labels: dict[str, str] | None = None,
) -> StepContext:
    incident = Incident(
        id=incident_id,
        service="rag",
        state=IncidentState.RUNNING,
        dry_run=False,
        created_at=0,
        plan=[],
        context=saved,
        trigger=Trigger(kind="alert", reason="t", requested_by="am", alertname="A", labels=labels or {}),
    )

    async def save(key: str, value: Any) -> None:
        saved[key] = value

    return StepContext(
        incident=incident,
        runtime=runtime,
        step_name="x",
        attempt=1,
        dry_run=False,
        outputs={},
        log=logging.LoggerAdapter(logging.getLogger("contract"), {}),
        save=save,
    )


def built(spec: dict[str, Any]) -> Any:
    ((step,),) = build_plan([StepConfig.model_validate(spec)], "plan")
    return step


class StepContract:
    type: ClassVar[str]

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        raise NotImplementedError
        yield

    async def test_registered_under_its_type(self, case: Case) -> None:
        assert case.step.type == self.type and isinstance(case.step, load_class(STEP_TYPES[self.type]))
        text = case.step.describe()
        assert text and "\n" not in text

    async def test_not_done_before_it_ran(self, case: Case) -> None:
        assert await case.step.is_done(case.ctx) is False

    async def test_done_after_it_ran(self, case: Case) -> None:
        output = await case.step.run(case.ctx)
        json.dumps(output)
        assert isinstance(output, dict)
        assert await case.step.is_done(case.ctx) is True

    async def test_a_second_run_changes_nothing(self, case: Case) -> None:
        await case.step.run(case.ctx)
        world = await case.world() if case.world else None
        again = await case.step.run(case.ctx)
        json.dumps(again)
        assert await case.step.is_done(case.ctx) is True
        if case.world:
            assert await case.world() == world


def test_every_step_type_has_a_contract_class() -> None:
    covered = {cls.type for cls in _all_subclasses(StepContract)}
    assert covered == set(STEP_TYPES)


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return {c for c in out if "type" in vars(c)}


# ---- command and http ---------------------------------------------------------------------------
class TestCommandStep(StepContract):
    type = "command"

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        marker = tmp_path / "marker"
        code = "import os, sys; open(sys.argv[1], 'a').write(os.environ['ROLLBACKD_LABEL_SERVICE'] + '\\n')"
        step = built(
            {
                "type": "command",
                "name": "mark",
                "argv": [sys.executable, "-c", code, str(marker)],
                "check": ["/bin/sh", "-c", f'test -s "{marker}"'],
            }
        )

        # world=None: a command is as idempotent as the operator's program; ``check`` is what resume asks
        yield Case(step, context(ServiceRuntime("rag", None), {}, labels={"service": "rag"}))  # type: ignore[arg-type]


class Switchboard(JsonHandler):
    def do_GET(self) -> None:
        self.send_json(200 if self.server.switched else 404, {"switched": self.server.switched})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.switched = True
        self.send_json(200, {})


class TestHttpStep(StepContract):
    type = "http"

    @pytest.fixture
    def stub(self) -> Iterator[Any]:
        with serve(Switchboard, switched=False) as server:
            yield server

    @pytest.fixture
    async def case(self, tmp_path: Path, stub: Any) -> AsyncIterator[Case]:
        step = built(
            {
                "type": "http",
                "name": "switch",
                "url": stub.url + "/switch",
                "json_body": {"to": "$service"},
                "check": {"url": stub.url + "/switch", "expect_status": [200]},
            }
        )

        async def world() -> bool:
            return bool(stub.switched)

        yield Case(step, context(ServiceRuntime("rag", None), {}), world)  # type: ignore[arg-type]


# ---- traffic ------------------------------------------------------------------------------------
def file_switch(tmp_path: Path, weight: int) -> tuple[CommandTrafficSwitch, Path]:
    state = tmp_path / "weight"
    state.write_text(str(weight))
    write = [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(state), "{weight}"]
    return CommandTrafficSwitch(
        CommandTrafficSwitch.Options(type="command", get_argv=["/bin/cat", str(state)], set_argv=write)
    ), state


class TestCutTraffic(StepContract):
    type = "traffic.cut"

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        switch, state = file_switch(tmp_path, 100)

        async def world() -> str:
            return state.read_text()

        yield Case(
            built({"type": "traffic.cut"}),
            context(
                ServiceRuntime("rag", None, Capabilities(traffic=switch)),  # type: ignore[arg-type]
                {},
            ),
            world,
        )


class TestRestoreTraffic(StepContract):
    type = "traffic.restore"

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        switch, state = file_switch(tmp_path, 0)  # cut by this incident, which found 100

        async def world() -> str:
            return state.read_text()

        runtime = ServiceRuntime("rag", None, Capabilities(traffic=switch))  # type: ignore[arg-type]
        yield Case(built({"type": "traffic.restore"}), context(runtime, {"traffic_weight": 100}), world)


# ---- verify -------------------------------------------------------------------------------------
class TestVerify(StepContract):
    type = "verify"

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        suite = VerifySuite(service="rag", checks=[Scripted("smoke", ["pass"])])
        saved: dict[str, Any] = {}
        ctx = context(ServiceRuntime("rag", None, Capabilities(verify=suite)), saved)  # type: ignore[arg-type]

        async def save(key: str, value: Any) -> None:
            saved[key] = value

        ctx.save = save
        yield Case(built({"type": "verify"}), ctx, None)


# ---- data (real Postgres and the Qdrant test server, as in tests/integration/test_data_steps.py) ----------
class DataContract(StepContract):
    @pytest.fixture
    async def data_world(self, pg_dsn: str, qdrant_server: QdrantTestServer, tmp_path: Path) -> AsyncIterator[Any]:
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
        await data.create(reason="green")
        await bad_deploy(pg_dsn, qdrant_server.url)

        async def live() -> tuple[int, int]:
            return (await table_counts(pg_dsn))["docs"], await points(qdrant_server.url)

        data.live = live  # type: ignore[attr-defined]
        yield data
        await data.close()

    async def ran(self, data: Any, context: dict[str, Any], *types: str) -> None:
        for name in types:
            await built({"type": name}).run(make_ctx(data, context))


class TestSafetySnapshot(DataContract):
    type = "snapshot.safety"

    @pytest.fixture
    async def case(self, data_world: Any) -> AsyncIterator[Case]:
        async def world() -> list[str]:
            return sorted(s.id for s in await data_world.list())

        yield Case(built({"type": self.type}), make_ctx(data_world, {"target": None}), world)


class TestPrepareData(DataContract):
    type = "data.prepare"

    @pytest.fixture
    async def case(self, data_world: Any) -> AsyncIterator[Case]:
        context: dict[str, Any] = {"target": None}
        await self.ran(data_world, context, "snapshot.safety")
        yield Case(built({"type": self.type}), make_ctx(data_world, context), data_world.live)


class TestSwapData(DataContract):
    type = "data.swap"

    @pytest.fixture
    async def case(self, data_world: Any) -> AsyncIterator[Case]:
        context: dict[str, Any] = {"target": None}
        await self.ran(data_world, context, "snapshot.safety", "data.prepare")
        yield Case(built({"type": self.type}), make_ctx(data_world, context), data_world.live)


class TestRollForwardData(DataContract):
    type = "data.roll_forward"

    @pytest.fixture
    async def case(self, data_world: Any) -> AsyncIterator[Case]:
        context: dict[str, Any] = {"target": None}
        await self.ran(data_world, context, "snapshot.safety", "data.prepare", "data.swap")
        original = make_ctx(data_world, context).incident

        class State:
            async def get_incident(self, incident_id: str) -> Incident | None:
                return original if incident_id == original.id else None

        data_world.state = State()
        rf = make_ctx(data_world, {"rollforward_of": original.id}, incident_id="20261122-050000-beef")
        yield Case(built({"type": self.type}), rf, data_world.live)


# ---- deploy (the command deployer on a version file, a SQLite release ledger) ------------------------
class DeployContract(StepContract):
    @pytest.fixture
    async def deploy_world(self, tmp_path: Path) -> AsyncIterator[Any]:
        store = SqliteStateStore(SqliteStateStore.Options(path=str(tmp_path / "state.db")))
        await store.open()
        green = await store.record_release(Release(service="rag", version="v1", green_at=1.0, green_by="t"))
        await store.record_release(Release(service="rag", version="v2"))  # live now; v1 superseded
        running = tmp_path / "version"
        running.write_text("v2")
        write = [
            sys.executable,
            "-c",
            "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
            str(running),
            "{version}",
        ]
        deployer = CommandDeployer(
            CommandDeployer.Options.model_validate(
                {"type": "command", "argv": write, "current_argv": ["/bin/cat", str(running)]}
            )
        )
        ledger = Ledger(
            service="rag",
            store=store,
            metrics=Metrics(["rag"]),
            prometheus=None,
            baseline=BaselineOptions(),
            green_after=None,
            deployer=deployer,
        )
        runtime = ServiceRuntime("rag", None, Capabilities(deployer=deployer, releases=ledger))  # type: ignore[arg-type]

        async def world() -> tuple[str, str | None]:
            live = await ledger.live()
            return running.read_text(), live.version if live else None

        yield SimpleNamespace(store=store, runtime=runtime, green=green, state=world)
        await store.close()


class TestRedeploy(DeployContract):
    type = "deploy.revert"

    @pytest.fixture
    async def case(self, deploy_world: Any) -> AsyncIterator[Case]:
        target = {"version": "v1", "release_id": deploy_world.green.id}
        yield Case(built({"type": self.type}), context(deploy_world.runtime, {"target": target}), deploy_world.state)


class TestRollForwardDeploy(DeployContract):
    type = "deploy.roll_forward"

    @pytest.fixture
    async def case(self, deploy_world: Any) -> AsyncIterator[Case]:
        reverted: dict[str, Any] = {"target": {"version": "v1", "release_id": deploy_world.green.id}}
        first = context(deploy_world.runtime, reverted)
        await built({"type": "deploy.revert"}).run(first)
        await deploy_world.store.create_incident(dataclasses.replace(first.incident, context=reverted))
        rf = context(deploy_world.runtime, {"rollforward_of": first.incident.id}, incident_id="20261122-050000-beef")
        yield Case(built({"type": self.type}), rf, deploy_world.state)


import tests.contracts.test_rollout_step_contract  # noqa: E402, F401  (the rollout's step types register here)
