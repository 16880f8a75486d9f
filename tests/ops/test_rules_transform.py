"""The time-compressing transform CI applies to the shipped rules (tests/support/rules_transform.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.ops.common import RULE_FILES, rules_of, run
from tests.support.rules_transform import (
    compress,
    compress_duration,
    compress_expr,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("duration", "factor", "expected"),
    [
        ("3m", 60, "3s"),
        ("5m", 60, "5s"),
        ("1h", 60, "1m"),
        ("1d", 60, "24m"),
        ("4h", 60, "4m"),
        ("30m", 60, "30s"),
        ("1h30m", 60, "1m30s"),
        ("10s", 60, "1s"),  # never below 1s
        ("90s", 60, "2s"),  # 1.5s rounds half up
        ("1w", 7, "1d"),
        ("5m", 1, "5m"),
        ("0s", 60, "0s"),
    ],
)
def test_compress_duration(duration: str, factor: int, expected: str) -> None:
    assert compress_duration(duration, factor) == expected


def test_parse_and_format_round_trip() -> None:
    for text in ("1s", "59s", "1m30s", "2h", "1d2h3m4s", "250ms"):
        assert format_duration(parse_duration(text)) == text
    with pytest.raises(ValueError):
        parse_duration("5 minutes")
    with pytest.raises(ValueError):
        compress_duration("5m", 0)


def test_compress_expr_touches_windows_subqueries_and_offsets_only() -> None:
    expr = (
        'sum by (service) (rate(x{code=~"5..",q="[5m]"}[5m] offset 1d))'
        " / max_over_time(y[1h:1m]) + z[10m:] offset -1h > 0.07 and foo_offset > 2"
    )
    assert compress_expr(expr, 60) == (
        'sum by (service) (rate(x{code=~"5..",q="[5m]"}[5s] offset 24m))'
        " / max_over_time(y[1m:1s]) + z[10s:] offset -1m > 0.07 and foo_offset > 2"
    )


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_compressed_rules_keep_everything_but_durations(path: Path) -> None:
    original = rules_of(path)
    compressed_doc = yaml.safe_load(compress(path.read_text(), 60))
    compressed = [{**r, "_group": g["name"]} for g in compressed_doc["groups"] for r in g["rules"]]
    assert len(compressed) == len(original)
    for before, after in zip(original, compressed, strict=True):
        assert {k: v for k, v in before.items() if k not in ("expr", "for")} == {
            k: v for k, v in after.items() if k not in ("expr", "for")
        }
        if "for" in before:
            assert parse_duration(after["for"]) == max(1000, round(parse_duration(before["for"]) / 60_000) * 1000)
        assert "[" not in after["expr"] or "[" in before["expr"]


def test_shipped_for_durations_become_seconds() -> None:
    compressed = yaml.safe_load(compress(RULE_FILES[0].read_text(), 60))
    fors = {r["alert"]: r["for"] for g in compressed["groups"] for r in g["rules"] if "alert" in r}
    assert fors["RAGGateFailRateHigh"] == "3s"
    assert fors["RAGGovernanceViolation"] == "1m"
    exprs = {r.get("record"): r["expr"] for g in compressed["groups"] for r in g["rules"]}
    assert "[3s]" in exprs["rag:gate_checks_fail:ratio_rate3m"]
    assert "offset 24m" in compressed["groups"][4]["rules"][1]["expr"]


@pytest.mark.parametrize("factor", [1, 15, 60])
def test_compressed_rules_pass_promtool(promtool: str, tmp_path: Path, factor: int) -> None:
    paths = []
    for path in RULE_FILES:
        out = tmp_path / path.name
        out.write_text(compress(path.read_text(), factor))
        paths.append(str(out))
    result = run([promtool, "check", "rules", *paths])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compress_rejects_what_is_not_a_rules_file() -> None:
    with pytest.raises(ValueError, match="groups"):
        compress("scrape_configs: []\n", 60)
