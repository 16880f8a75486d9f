"""traffic.cut / traffic.restore: the weight found is remembered in the incident's context (so a
resumed cut never remembers its own 0) and put back; with no switch configured both say so, in the
step output (Slack) and in status."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from rollbackd.capabilities import Capabilities
from rollbackd.config import StepConfig
from rollbackd.plan import ServiceRuntime, StepContext
from rollbackd.reasons import IncidentState
from rollbackd.records import Incident, Trigger
from rollbackd.traffic.command import CommandTrafficSwitch
from rollbackd.traffic.steps import NULL_SUMMARY, CutTraffic, RestoreTraffic
from tests.support.daemon import Api, command_service, running_daemon, write_config


def context(tmp_path: Path, switch: Any, saved: dict[str, Any]) -> StepContext:
    incident = Incident(
        id="i1",
        service="rag",
        state=IncidentState.RUNNING,
        trigger=Trigger(kind="manual", reason="t", requested_by="me"),
        dry_run=False,
        created_at=0,
        plan=[],
        context=saved,
    )

    async def save(key: str, value: Any) -> None:
        saved[key] = value

    runtime = ServiceRuntime(name="rag", config=None, caps=Capabilities(traffic=switch))  # type: ignore[arg-type]
    return StepContext(
        incident=incident,
        runtime=runtime,
        step_name="x",
        attempt=1,
        dry_run=False,
        outputs={},
        log=logging.LoggerAdapter(logging.getLogger("t"), {}),
        save=save,
    )


def file_switch(tmp_path: Path, weight: int) -> CommandTrafficSwitch:
    state = tmp_path / "weight"
    state.write_text(str(weight))
    return CommandTrafficSwitch(
        CommandTrafficSwitch.Options(
            type="command",
            get_argv=["/bin/cat", str(state)],
            set_argv=[
                sys.executable,
                "-c",
                "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                str(state),
                "{weight}",
            ],
        )
    )


async def test_cut_remembers_the_weight_and_restore_puts_it_back(tmp_path: Path) -> None:
    switch = file_switch(tmp_path, 25)
    saved: dict[str, Any] = {}
    ctx = context(tmp_path, switch, saved)
    cut = CutTraffic(StepConfig(type="traffic.cut"), CutTraffic.Options())
    restore = RestoreTraffic(StepConfig(type="traffic.restore"), RestoreTraffic.Options())
    assert not await cut.is_done(ctx)
    out = await cut.run(ctx)
    assert out["weight_before"] == 25 and saved["traffic_weight"] == 25 and await switch.weight() == 0
    assert await cut.is_done(ctx)
    again = await cut.run(ctx)  # a resumed cut: the weight remembered is still the one found first
    assert again["weight_before"] == 25
    assert not await restore.is_done(ctx)
    assert (await restore.run(ctx))["weight"] == 25 and await switch.weight() == 25
    assert await restore.is_done(ctx)


async def test_restore_without_a_cut_leaves_traffic_alone(tmp_path: Path) -> None:
    switch = file_switch(tmp_path, 40)
    ctx = context(tmp_path, switch, {})
    restore = RestoreTraffic(StepConfig(type="traffic.restore"), RestoreTraffic.Options())
    assert "not cut" in (await restore.run(ctx))["summary"] and await switch.weight() == 40


async def test_null_switch_says_so_in_steps_and_status(tmp_path: Path) -> None:
    plan = [{"type": "traffic.cut"}, {"type": "traffic.restore"}]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    async with running_daemon(cfg) as daemon:
        api = Api(daemon.url)

        async def call(*args: Any) -> Any:
            return await asyncio.to_thread(api.call, *args)

        status, inc = await call("POST", "/v1/trigger", {"reason": "drill the switchless path"})
        assert status == 202, inc
        await daemon.core.runner.wait(inc["id"])
        body = (await call("GET", f"/v1/incidents/{inc['id']}"))[1]
        assert body["state"] == "resolved"
        assert [s["output"]["summary"] for s in body["steps"]] == [NULL_SUMMARY, NULL_SUMMARY]
        svc = (await call("GET", "/v1/status"))[1]["services"]["rag"]
        assert svc["traffic"] == {"switch": "null", "note": "no traffic switch configured"}
        assert (await call("GET", "/v1/traffic"))[1] == {"service": "rag", "switch": "null", "weight": 100}
