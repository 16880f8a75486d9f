"""The wiring builds each service's capabilities as typed handles (ServiceRuntime.caps); the old
string-keyed ``resources`` is a read-only view of them, kept one release for out-of-tree code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollbackd.deploy.command import CommandDeployer
from rollbackd.deploy.docker import DockerDeployer
from rollbackd.deploy.ledger import Ledger
from rollbackd.drill.runner import Drill
from rollbackd.snapshots.dataset import DataSet
from rollbackd.traffic.command import CommandTrafficSwitch
from rollbackd.traffic.null import NullTrafficSwitch
from rollbackd.verify.suite import VerifySuite
from rollbackd.wiring import build_core, parse_settings

ENV = {
    "ROLLBACKD_WEBHOOK_TOKEN": "w" * 24,
    "ROLLBACKD_API_TOKEN": "a" * 24,
    "RAG_PG_DSN": "postgresql://postgres@127.0.0.1:5432/rag",
}
PLAN = [{"type": "command", "argv": ["/bin/true"]}]


def core_of(tmp_path: Path, services: dict[str, object]) -> object:
    cfg = {
        "auth": {
            "webhook_token": "${ROLLBACKD_WEBHOOK_TOKEN}",
            "api_tokens": [{"name": "t", "token": "${ROLLBACKD_API_TOKEN}"}],
        },
        "state": {"type": "sqlite", "path": str(tmp_path / "state.db")},
        "services": services,
    }
    return build_core(parse_settings(json.dumps(cfg), ENV))


def test_every_configured_capability_is_a_typed_handle(tmp_path: Path) -> None:
    full = {
        "policy": {"confirm": "off"},
        "plan": PLAN,
        "snapshots": {
            "dir": str(tmp_path / "snaps"),
            "stores": {"postgres": {"type": "postgres", "dsn": "${RAG_PG_DSN}"}},
        },
        "deploy": {"type": "docker", "containers": [{"name": "rag", "health_url": "http://127.0.0.1:9/h"}]},
        "traffic": {"type": "command", "get_argv": ["/bin/echo", "1"], "set_argv": ["/bin/true"]},
        "verify": {"checks": [{"type": "alert_cleared"}]},
        "drill": {},
    }
    bare = {"policy": {"confirm": "off"}, "plan": PLAN}
    command = {"type": "command", "argv": ["/bin/true"], "health_url": "http://127.0.0.1:9/h"}
    core = core_of(tmp_path, {"full": full, "bare": bare, "nodata": {**bare, "deploy": command}})
    caps = core.services["full"].caps  # type: ignore[attr-defined]
    assert isinstance(caps.snapshots, DataSet) and isinstance(caps.deployer, DockerDeployer)
    assert isinstance(caps.traffic, CommandTrafficSwitch) and isinstance(caps.releases, Ledger)
    assert isinstance(caps.verify, VerifySuite) and isinstance(caps.drill, Drill)
    assert caps.releases.caps is caps and caps.verify.caps is caps  # they see the handles built after them
    bare_caps = core.services["bare"].caps  # type: ignore[attr-defined]
    assert (bare_caps.snapshots, bare_caps.deployer, bare_caps.verify, bare_caps.drill) == (None, None, None, None)
    assert isinstance(bare_caps.traffic, NullTrafficSwitch)  # no `traffic:`: the null switch, as before
    nodata = core.services["nodata"].caps  # type: ignore[attr-defined]
    assert isinstance(nodata.deployer, CommandDeployer) and nodata.snapshots is None


def test_resources_is_a_read_only_view_of_the_handles(tmp_path: Path) -> None:
    core = core_of(tmp_path, {"rag": {"policy": {"confirm": "off"}, "plan": PLAN}})
    runtime = core.services["rag"]  # type: ignore[attr-defined]
    assert dict(runtime.resources) == {
        "releases": runtime.caps.releases,
        "traffic": runtime.caps.traffic,
        "rollout": runtime.caps.rollout,
    }
    with pytest.raises(TypeError):
        runtime.resources["deployer"] = object()
