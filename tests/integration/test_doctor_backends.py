"""`rollbackd doctor`'s checks of what a rollback uses, against the real things: the Slack recorder
(auth.test, conversations.info), Podman's Docker API, the PostgreSQL server (rights) and the Qdrant
test server (alias). Each check is green when all is well and says what to do when it is not."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from rollbackd.config import Settings
from rollbackd.doctor import Finding, Status, backends
from rollbackd.doctor import daemon as daemon_checks
from rollbackd.doctor.context import Context
from rollbackd.doctor.run import run_checks
from rollbackd.wiring import parse_settings as parse
from tests.support import images
from tests.support.corpus import load_points
from tests.support.daemon import TEST_ENV, DaemonProcess, config_dict, load_settings, secret_ref, write_config
from tests.support.pg import admin_connect
from tests.support.podman import PodmanService
from tests.support.podman import podman as podman
from tests.support.qdrant import QdrantTestServer
from tests.support.slack_recorder import SlackRecorder

pytestmark = pytest.mark.integration
PLAN = [{"type": "command", "argv": ["/bin/true"]}]


def settings(tmp_path: Path, service: Mapping[str, Any] | None = None, **top: Any) -> Settings:
    svc = {"policy": {"confirm": "off"}, "plan": PLAN, **(service or {})}
    raw = config_dict(tmp_path, services={"rag": svc}, **top)
    return parse(yaml.safe_dump(raw), {**os.environ, **TEST_ENV})  # secret_ref exports DSNs to os.environ


async def check(s: Settings, fn: Any) -> list[Finding]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        return await run_checks(Context(settings=s, session=session), [(fn.__name__, fn)])


def slack_settings(tmp_path: Path, recorder: SlackRecorder, *, token: str, channel: str) -> Settings:
    raw = config_dict(
        tmp_path,
        services={"rag": {"policy": {"confirm": "off"}, "plan": PLAN}},
        notify={"type": "slack", "bot_token": "${SLACK_BOT_TOKEN}", "channel": channel, "base_url": recorder.base_url},
    )
    return parse(yaml.safe_dump(raw), {**TEST_ENV, "SLACK_BOT_TOKEN": token})


async def test_slack_token_and_channel(tmp_path: Path, slack_recorder: SlackRecorder) -> None:
    slack_recorder.channels = {"C0RAG"}
    (good,) = await check(
        slack_settings(tmp_path, slack_recorder, token=slack_recorder.token, channel="C0RAG"), backends.check_slack
    )
    assert (good.status, good.subject) == (Status.OK, "rag"), good
    assert "token valid" in good.detail and "#channel-c0rag reachable" in good.detail
    slack_recorder.scopes = "chat:write"  # a root whose answer is lost could not be found again
    (no_history,) = await check(
        slack_settings(tmp_path, slack_recorder, token=slack_recorder.token, channel="C0RAG"), backends.check_slack
    )
    assert no_history.status is Status.WARN and "channels:history" in no_history.fix, no_history
    slack_recorder.scopes = "chat:write,groups:history"
    (private,) = await check(
        slack_settings(tmp_path, slack_recorder, token=slack_recorder.token, channel="C0RAG"), backends.check_slack
    )
    assert private.status is Status.OK, private
    (bad_token,) = await check(
        slack_settings(tmp_path, slack_recorder, token="xoxb-wrong", channel="C0RAG"), backends.check_slack
    )
    assert bad_token.status is Status.FAIL and "invalid_auth" in bad_token.detail and "xoxb-wrong" not in str(bad_token)
    (by_name,) = await check(
        slack_settings(tmp_path, slack_recorder, token=slack_recorder.token, channel="#rag"), backends.check_slack
    )
    assert by_name.status is Status.FAIL and "channel ID" in by_name.fix
    slack_recorder.set_down(True)
    (down,) = await check(
        slack_settings(tmp_path, slack_recorder, token=slack_recorder.token, channel="C0RAG"), backends.check_slack
    )
    assert down.status is Status.FAIL and "does not answer" in down.detail
    # The doctor only reads: it never posted a message.
    assert {r.method for r in slack_recorder.requests} <= {"auth.test", "conversations.info"}
    assert slack_recorder.messages() == []


async def test_no_notifier_is_skipped(tmp_path: Path) -> None:
    (finding,) = await check(settings(tmp_path), backends.check_slack)
    assert finding.status is Status.SKIP and "notifier null" in finding.detail


def _pg_service(dsn: str) -> dict[str, Any]:
    return {
        "snapshots": {
            "dir": "/tmp/rbt-doctor-snaps",
            "stores": {"postgres": {"type": "postgres", "dsn": secret_ref("DOCTOR_PG_DSN", dsn)}},
        }
    }


async def test_postgres_rights(tmp_path: Path, pg_dsn: str) -> None:
    (owner,) = await check(settings(tmp_path, _pg_service(pg_dsn)), backends.check_postgres)
    assert (owner.status, owner.subject) == (Status.OK, "rag.postgres"), owner
    role = f"rbt_doctor_{secrets.token_hex(4)}"
    admin = await admin_connect()
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
        weak = pg_dsn.replace("postgresql://postgres@", f"postgresql://{role}@")
        (finding,) = await check(settings(tmp_path, _pg_service(weak)), backends.check_postgres)
        assert finding.status is Status.FAIL, finding
        assert (
            "missing CREATEDB" in finding.detail
            and "ownership of the live database (owned by postgres" in finding.detail
        )
        assert f"ALTER ROLE {role} CREATEDB" in finding.fix
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
    (down,) = await check(
        settings(tmp_path, _pg_service("postgresql://postgres@127.0.0.1:9/x")), backends.check_postgres
    )
    assert down.status is Status.FAIL and "connection refused" in down.detail


async def test_qdrant_alias(tmp_path: Path, qdrant_server: QdrantTestServer) -> None:
    await load_points(qdrant_server.url, "docs__v1", count=3, alias="docs")
    store = {"type": "qdrant", "url": qdrant_server.url, "alias": "docs"}
    service = {"snapshots": {"dir": "/tmp/rbt-doctor-snaps", "stores": {"qdrant": store}}}
    (good,) = await check(settings(tmp_path, service), backends.check_qdrant)
    assert good.status is Status.OK and "alias docs -> collection docs__v1 (3 points)" in good.detail
    service["snapshots"]["stores"]["qdrant"] = {**store, "alias": "papers"}
    (missing,) = await check(settings(tmp_path, service), backends.check_qdrant)
    assert missing.status is Status.FAIL and "alias 'papers' does not exist" in missing.detail
    assert "adopt-alias" in missing.fix


async def test_unconfigured_stores_are_skipped(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert [f.status for f in await check(s, backends.check_postgres)] == [Status.SKIP]
    assert [f.status for f in await check(s, backends.check_qdrant)] == [Status.SKIP]
    assert [f.status for f in await check(s, backends.check_docker)] == [Status.SKIP]


async def test_docker_api_and_the_service_container(tmp_path: Path, podman: PodmanService) -> None:
    image = images.build_image(
        podman,
        images.session_tag(podman, "doctor", "v1"),
        files={},
        cmd=["/bin/busybox", "sleep", "600"],
        env={},
        labels={},
    )
    name = podman.name("doctor")
    podman.client().containers.create(image, name=name, labels=podman.labels)

    def deploy(host: str, container: str) -> dict[str, Any]:
        return {
            "deploy": {
                "type": "docker",
                "docker_host": host,
                "containers": [{"name": container, "health_url": "http://127.0.0.1:9/healthz"}],
            }
        }

    try:
        (good,) = await check(settings(tmp_path, deploy(podman.docker_host, name)), backends.check_docker)
        assert good.status is Status.OK and f"container {name} (created)" in good.detail, good
        (missing,) = await check(settings(tmp_path, deploy(podman.docker_host, name + "-gone")), backends.check_docker)
        assert missing.status is Status.FAIL and f"no container named {name}-gone" in missing.detail
        (down,) = await check(settings(tmp_path, deploy(f"unix://{tmp_path}/none.sock", name)), backends.check_docker)
        assert down.status is Status.FAIL and "does not answer" in down.detail
    finally:
        podman.remove_containers()


async def test_snapshots_fresh_and_verified_per_store_through_the_daemon(tmp_path: Path, pg_dsn: str) -> None:
    """The snapshot check reads the daemon's status and its per-store gauge, before and after a set."""
    service = {
        "policy": {"confirm": "off"},
        "releases": {"track": False},
        "plan": [{"type": "snapshot.safety"}],
        "snapshots": {
            "dir": str(tmp_path / "snaps"),
            "stores": {"postgres": {"type": "postgres", "dsn": secret_ref("DOCTOR_PG_DSN", pg_dsn)}},
        },
    }
    config = write_config(tmp_path, services={"rag": service})
    s = load_settings(config)
    with DaemonProcess(config) as daemon:
        findings = await check(s, daemon_checks.check_daemon) + await _after_daemon(s, daemon_checks.check_snapshots)
        assert [f.status for f in findings] == [Status.OK, Status.FAIL], findings
        assert "rollbackd snapshot create --service rag" in findings[1].fix
        status, body = daemon.api.call("POST", "/v1/snapshots", {"service": "rag", "reason": "doctor test"})
        assert status in (200, 201), body
        set_id = body["id"]
        status, body = daemon.api.call("POST", f"/v1/snapshots/{set_id}/verify", {"service": "rag"})
        assert status == 200, body
        (snapshots,) = await _after_daemon(s, daemon_checks.check_snapshots)
    assert snapshots.status is Status.OK, snapshots
    assert f"latest {set_id} verified (postgres " in snapshots.detail and " ago)" in snapshots.detail


async def _after_daemon(s: Settings, fn: Any) -> list[Finding]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        checks = [("rollbackd", daemon_checks.check_daemon), (fn.__name__, fn)]
        return (await run_checks(Context(settings=s, session=session), checks))[1:]
