"""The two ways of having no target, as distinct reasons end to end (in-process daemon, SQLite): the
webhook's decision, status, metrics and the manual trigger's 409. A schema mismatch also freezes the
service (a hold until `rollbackd resume`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support.daemon import Api, running_daemon, write_config


def service(data: str) -> dict[str, Any]:
    return {
        "policy": {"confirm": "off"},
        "releases": {"data": data},
        "plan": [{"type": "command", "argv": ["/bin/true"]}],
    }


async def test_nothing_to_roll_back_to_and_schema_mismatch_are_distinct(
    tmp_path: Path, firing_payload: dict[str, Any]
) -> None:
    cfg = write_config(tmp_path, services={"rag": service("optional")})
    async with running_daemon(cfg) as daemon:
        api = Api(daemon.url)

        async def call(*args: Any) -> Any:
            return await asyncio.to_thread(api.call, *args)

        status, body = await call("POST", "/v1/trigger", {"reason": "try"})
        assert status == 409 and body["reason"] == "nothing_to_roll_back_to", body
        assert (await call("POST", "/v1/releases", {"version": "v1", "digest": "sha256:1", "schema_version": "1"}))[
            0
        ] == 201
        assert (await call("POST", "/v1/releases", {"version": "v1x", "image": "reg/rag:v1"}))[1]["field"] == "digest"
        assert (await call("POST", "/v1/releases/v1/green", {"reason": "fine"}))[0] == 200
        await call("POST", "/v1/releases", {"version": "v2", "digest": "sha256:2", "schema_version": "2"})
        svc = (await call("GET", "/v1/status"))[1]["services"]["rag"]
        assert svc["no_target"]["reason"] == "schema_mismatch" and svc["has_target"] is False

        status, body = await call("POST", "/v1/trigger", {"reason": "try"})
        assert status == 409 and body["reason"] == "schema_mismatch" and "schema 1" in body["detail"], body

        status, body = await asyncio.to_thread(api.webhook, firing_payload)
        assert status == 202
        decision = body["decisions"][0]
        assert (decision["action"], decision["reason"]) == ("suppressed", "schema_mismatch"), decision
        svc = (await call("GET", "/v1/status"))[1]["services"]["rag"]
        assert svc["held"] is not None and "schema" in svc["held"]["reason"]
        assert svc["last_decisions"][0]["reason"] == "schema_mismatch"
        metrics = (await call("GET", "/metrics"))[1].decode()
        assert 'rollbackd_alerts_total{decision="suppressed",reason="schema_mismatch",service="rag"} 1.0' in metrics
        assert 'reason="nothing_to_roll_back_to",service="rag"} 0.0' in metrics

        # the same release history with a matching schema: a code-only target, explained
        await call("POST", "/v1/releases", {"version": "v3", "digest": "sha256:3", "schema_version": "1"})
        await call("POST", "/v1/resume", {"reason": "looked at it"})
        status, inc = await call("POST", "/v1/trigger", {"reason": "go", "dry_run": True})
        assert status == 202 and inc["target"]["version"] == "v1" and "code only" in inc["target"]["why"]
