"""Every child rollbackd starts gets a built environment: a hostile label never fails a step, and the
daemon's tokens never reach a command step, the command deployer, the command traffic switch or pg_dump."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from rollbackd import childenv
from rollbackd.deploy.command import CommandDeployer
from rollbackd.records import Release
from rollbackd.snapshots.pgtools import Dsn
from rollbackd.traffic.command import CommandTrafficSwitch
from tests.integration.test_runner import only_incident, webhook
from tests.support.daemon import TEST_ENV, command_service, running_daemon, write_config

SECRET_ENV = {**TEST_ENV, "AWS_SECRET_ACCESS_KEY": "aws-secret-value-123", "PGPASSWORD": "pg-password-123"}


def dump_env(out: Path) -> list[str]:
    return [sys.executable, "-c", "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))", str(out)]


def assert_clean(env: dict[str, str], declared: frozenset[str] = frozenset()) -> None:
    leaked = {k for k, v in env.items() if any(s in v for s in SECRET_ENV.values())}
    assert leaked == set()
    extra = {k for k in env if k not in childenv.ALLOWED and not k.startswith(("LC_", "ROLLBACKD_"))} - declared
    assert extra == set(), extra  # nothing outside the allow-list


@pytest.fixture
def secret_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SECRET_ENV.items():
        monkeypatch.setenv(key, value)


async def test_hostile_labels_never_fail_a_command_step(
    tmp_path: Path, firing_payload: dict[str, Any], secret_environ: None
) -> None:
    out = tmp_path / "env.json"
    payload = firing_payload
    for alert in payload["alerts"]:
        alert["labels"].update(
            {"a=b": "eq", "a-b": "dash", "Foo": "upper", "foo": "lower", "1x": "digit", "ok": "line1\nline2 $(id)"}
        )
    plan = [{"type": "command", "name": "dump", "argv": dump_env(out), "env": {"DECLARED": "yes"}}]
    cfg = write_config(tmp_path, services={"rag": command_service(plan)})
    async with running_daemon(cfg) as d:
        await webhook(d, payload)
        incident, steps = await only_incident(d)
    assert incident.state.value == "resolved", incident.error
    env = json.loads(out.read_text())
    assert env["ROLLBACKD_LABEL_FOO"] == "upper" and env["ROLLBACKD_LABEL_OK"] == "line1\nline2 $(id)"
    assert env["DECLARED"] == "yes"
    labels = {k for k in env if k.startswith("ROLLBACKD_LABEL_")}
    assert labels == {
        "ROLLBACKD_LABEL_" + n for n in ("ALERTNAME", "INSTANCE", "JOB", "ROUTE", "SERVICE", "SEVERITY", "FOO", "OK")
    }
    assert steps[0].output["labels_skipped"] == ["1x", "a-b", "a=b", "foo"]
    assert_clean(env, frozenset({"DECLARED"}))


async def test_command_deployer_child_gets_no_daemon_secret(tmp_path: Path, secret_environ: None) -> None:
    out = tmp_path / "env.json"
    dep = CommandDeployer(
        CommandDeployer.Options.model_validate(
            {"type": "command", "argv": dump_env(out), "env": {"KUBECONFIG": "/etc/kube"}}
        )
    )
    await dep.deploy(Release(service="rag", version="v1", digest="sha256:1"), incident="i1")
    env = json.loads(out.read_text())
    assert env["KUBECONFIG"] == "/etc/kube" and "PATH" in env
    assert_clean(env, frozenset({"KUBECONFIG"}))


async def test_command_traffic_child_gets_no_daemon_secret(tmp_path: Path, secret_environ: None) -> None:
    out = tmp_path / "env.json"
    switch = CommandTrafficSwitch(
        CommandTrafficSwitch.Options(type="command", get_argv=["/bin/echo", "100"], set_argv=dump_env(out))
    )
    await switch.set_weight(0)
    assert_clean(json.loads(out.read_text()))


def test_pg_tools_get_their_password_and_no_daemon_secret(secret_environ: None) -> None:
    env = Dsn.parse("postgresql://rb:dsn-password-1@127.0.0.1:5432/db").env()
    assert env["PGPASSWORD"] == "dsn-password-1"
    assert_clean({k: v for k, v in env.items() if k != "PGPASSWORD"})
