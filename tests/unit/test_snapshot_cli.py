"""`rollbackd snapshot ...`: argument parsing, the restore question, stdlib-only import."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rollbackd.cli import snapshot
from rollbackd.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]

PLAN = {
    "service": "rag",
    "steps": ["safety snapshot of the live data", "restore", "swap"],
    "snapshot": {"id": "20260101_000000_aa", "created_at": 0.0, "release": "v1"},
    "replaces": {
        "postgres": {
            "database": "rag",
            "bytes": 2048,
            "schema_version": {"live": "2", "snapshot": "1"},
            "tables": {"public.docs": {"live": 230, "snapshot": 200}},
        },
        "qdrant": {"alias": "docs", "collection": "docs__v1", "points": {"live": 230, "snapshot": 200}},
    },
}


class FakeClient:
    def __init__(self) -> None:
        self.timeout = 30.0
        self.calls: list[tuple[str, str, Any]] = []

    def post(self, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append(("POST", path, body))
        if body.get("dry_run"):
            return PLAN
        return {
            "incident": "I1",
            "service": "rag",
            "snapshot_set": "20260101_000000_aa",
            "state": "pending",
            "follow": "/v1/incidents/I1",
        }

    def get(self, path: str) -> dict[str, Any]:
        self.calls.append(("GET", path, None))
        if len([c for c in self.calls if c[0] == "GET"]) < 2:
            return {"id": "I1", "state": "running", "steps": []}
        swap = {
            "snapshot_set": "20260101_000000_aa",
            "downtime_s": {"postgres": 0.02},
            "swapped": {"postgres": {"kept": "rag__pre_x"}},
            "properties_changed": {
                "postgres": {"settings": {"live": ["search_path=public"], "snapshot": ["search_path=app, public"]}}
            },
        }
        return {
            "id": "I1",
            "state": "resolved",
            "steps": [
                {"name": "snapshot.safety", "state": "done", "duration_s": 1.0, "output": {"snapshot_set": "s2"}},
                {"name": "data.swap", "state": "done", "duration_s": 0.1, "output": swap},
            ],
        }


def test_parses_every_subcommand() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "snapshot",
            "restore",
            "ID",
            "--reason",
            "bad deploy",
            "--dry-run",
            "--service",
            "rag",
            "--url",
            "http://127.0.0.1:1",
        ]
    )
    assert args.snapshot_fn is snapshot.cmd_restore and args.id == "ID" and args.dry_run and args.service == "rag"
    assert args.url == "http://127.0.0.1:1"
    for argv in (
        ["snapshot", "list"],
        ["snapshot", "create"],
        ["snapshot", "verify", "X"],
        ["snapshot", "prune", "--dry-run"],
        ["snapshot", "adopt-alias", "--reason", "r", "--yes"],
    ):
        assert parser.parse_args(argv).snapshot_fn is not None


def test_restore_dry_run_shows_what_is_replaced_and_does_nothing(capsys: Any) -> None:
    client = FakeClient()
    args = build_parser().parse_args(["snapshot", "restore", "ID", "--reason", "r", "--dry-run"])
    assert snapshot.cmd_restore(args, client) == 0
    out = capsys.readouterr().out
    assert "this REPLACES" in out and "public.docs: 230 rows -> 200" in out and "230 points -> 200" in out
    assert [c[2]["dry_run"] for c in client.calls] == [True]


def test_restore_asks_and_refuses_without_a_terminal(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient()
    args = build_parser().parse_args(["snapshot", "restore", "ID", "--reason", "r"])
    assert snapshot.cmd_restore(args, client) == 1  # stdin is not a tty under pytest
    assert "pass --yes" in capsys.readouterr().err
    assert len(client.calls) == 1
    args = build_parser().parse_args(["snapshot", "restore", "ID", "--reason", "r", "--yes"])
    monkeypatch.setattr(snapshot, "follow", functools.partial(snapshot.follow, interval=0))
    assert snapshot.cmd_restore(args, client) == 0
    posts = [c for c in client.calls if c[0] == "POST"]
    assert posts[-1][2]["dry_run"] is False and client.timeout == 30  # no long request: it follows the incident
    out = capsys.readouterr().out
    assert "runs as incident I1" in out and "downtime postgres 0.02s" in out and "rollforward I1" in out
    assert "postgres settings: ['search_path=public'] -> ['search_path=app, public']" in out


def test_following_says_unreachable_only_after_the_daemon_stays_silent() -> None:
    from rollbackd.cli.client import Unreachable
    from rollbackd.cli.follow import follow

    class Flaky:
        def __init__(self, answers: list[Any]) -> None:
            self.answers = answers

        def get(self, path: str) -> dict[str, Any]:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return dict(answer)

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += 10

    timeout = Unreachable("cannot reach rollbackd at http://x: timed out")
    flaky = Flaky([timeout, timeout, {"state": "running"}, timeout, {"state": "done"}])
    assert follow(flaky, "/p", lambda b: b["state"] == "done", clock=lambda: now[0], sleep=sleep) == {"state": "done"}
    silent = Flaky([timeout] * 20)
    with pytest.raises(Unreachable, match=r"no answer for 60s while following /p .*goes on in the daemon"):
        follow(silent, "/p", lambda b: True, clock=lambda: now[0], sleep=sleep)


def test_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys, rollbackd.cli.snapshot; "
        "bad = [m for m in ('pydantic', 'aiohttp', 'asyncpg', 'qdrant_client', 'rollbackd.snapshots') "
        "if m in sys.modules]; print(bad)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"
