"""`rollbackd snapshot ...`: argument parsing, the restore question, stdlib-only import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rollbackd.cli import snapshot
from rollbackd.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]

PLAN = {"service": "rag", "steps": ["safety snapshot of the live data", "restore", "swap"],
        "snapshot": {"id": "20260101_000000_aa", "created_at": 0.0, "release": "v1"},
        "replaces": {"postgres": {"database": "rag", "bytes": 2048, "schema_version": {"live": "2", "snapshot": "1"},
                                  "tables": {"public.docs": {"live": 230, "snapshot": 200}}},
                     "qdrant": {"alias": "docs", "collection": "docs__v1", "points": {"live": 230, "snapshot": 200}}}}


class FakeClient:
    def __init__(self) -> None:
        self.timeout = 30.0
        self.calls: list[tuple[str, str, Any]] = []

    def post(self, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append(("POST", path, body))
        if body.get("dry_run"):
            return PLAN
        return {"snapshot_set": "20260101_000000_aa", "seconds": 1.5, "downtime_s": {"postgres": 0.02},
                "swapped": {"postgres": {"kept": "rag__pre_x"}}, "safety_snapshot": "s2"}


def test_parses_every_subcommand() -> None:
    parser = build_parser()
    args = parser.parse_args(["snapshot", "restore", "ID", "--reason", "bad deploy", "--dry-run", "--service", "rag",
                              "--url", "http://127.0.0.1:1"])
    assert args.snapshot_fn is snapshot.cmd_restore and args.id == "ID" and args.dry_run and args.service == "rag"
    assert args.url == "http://127.0.0.1:1"
    for argv in (["snapshot", "list"], ["snapshot", "create"], ["snapshot", "verify", "X"],
                 ["snapshot", "prune", "--dry-run"], ["snapshot", "adopt-alias", "--reason", "r", "--yes"]):
        assert parser.parse_args(argv).snapshot_fn is not None


def test_restore_dry_run_shows_what_is_replaced_and_does_nothing(capsys: Any) -> None:
    client = FakeClient()
    args = build_parser().parse_args(["snapshot", "restore", "ID", "--reason", "r", "--dry-run"])
    assert snapshot.cmd_restore(args, client) == 0
    out = capsys.readouterr().out
    assert "this REPLACES" in out and "public.docs: 230 rows -> 200" in out and "230 points -> 200" in out
    assert [c[2]["dry_run"] for c in client.calls] == [True]


def test_restore_asks_and_refuses_without_a_terminal(capsys: Any) -> None:
    client = FakeClient()
    args = build_parser().parse_args(["snapshot", "restore", "ID", "--reason", "r"])
    assert snapshot.cmd_restore(args, client) == 1  # stdin is not a tty under pytest
    assert "pass --yes" in capsys.readouterr().err
    assert len(client.calls) == 1
    args = build_parser().parse_args(["snapshot", "restore", "ID", "--reason", "r", "--yes"])
    assert snapshot.cmd_restore(args, client) == 0
    assert client.calls[-1][2]["dry_run"] is False and client.timeout > 30
    assert "downtime postgres 0.02s" in capsys.readouterr().out


def test_module_imports_only_the_standard_library() -> None:
    code = ("import sys, rollbackd.cli.snapshot; "
            "bad = [m for m in ('pydantic', 'aiohttp', 'asyncpg', 'qdrant_client', 'rollbackd.snapshots') "
            "if m in sys.modules]; print(bad)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"
