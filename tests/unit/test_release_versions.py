"""Release versions match a documented character set, checked at the door: the API (400 naming the field),
the CLI (an argparse error before any request) and the ledger itself (the observe job's label values)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from rollbackd.cli.main import main
from rollbackd.releases import VERSION_RULE, version_problem
from tests.support.daemon import Api, running_daemon, write_config

BAD = [
    "",
    "a/b",
    "../etc",
    "v1..2",
    "v1\x00",
    "v1\nv2",
    "v1\u202e2v",
    "v 1",
    "-v1",
    ".v1",
    "x" * 129,
    "v1\t",
    "v1;rm",
    "v1\u200f",
]
GOOD = ["v1", "1.2.3", "2026-12-04.1", "v1.2.3+build.7", "rag:v1", "v1_rc-2", "sha@1", "x" * 128]


@pytest.mark.parametrize("version", BAD)
def test_bad_versions_are_refused_with_the_rule(version: str) -> None:
    problem = version_problem(version)
    assert problem is not None and VERSION_RULE in problem


@pytest.mark.parametrize("version", GOOD)
def test_good_versions_pass(version: str) -> None:
    assert version_problem(version) is None


@pytest.mark.parametrize("version", ["a/b", "v1..2", "v1\u202e2v"])
def test_cli_refuses_before_any_request(version: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["release", "record", version, "--digest", "sha256:1", "--url", "http://127.0.0.1:9"]) == 2
    assert "invalid" in capsys.readouterr().err


async def test_api_refuses_bad_versions(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        services={
            "rag": {
                "policy": {"confirm": "off"},
                "releases": {"data": "optional"},
                "plan": [{"type": "command", "argv": ["/bin/true"]}],
            }
        },
    )
    async with running_daemon(cfg) as daemon:
        api = Api(daemon.url)

        async def call(*args: Any) -> Any:
            return await asyncio.to_thread(api.call, *args)

        for version in ("a/b", "../x", "v1\u202e", "v1\n"):
            status, body = await call("POST", "/v1/releases", {"version": version, "digest": "sha256:1"})
            assert status == 400 and body["field"] == "version", (version, body)
        assert (await call("POST", "/v1/releases", {"version": "v1.2", "digest": "sha256:1"}))[0] == 201
        listed = (await call("GET", "/v1/releases"))[1]
        assert [r["version"] for r in listed["releases"]] == ["v1.2"]
