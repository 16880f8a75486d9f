"""Time-compress the shipped Prometheus rules for CI's end-to-end tests.

The shipped rules speak in minutes and hours (`rate(...[5m])`, `for: 3m`, `offset 1d`): run
unchanged, the 3 AM story takes a quarter of an hour before the first alert fires. CI runs the very
same rules with every duration that measures time in the data divided by a factor:

- every rule's `for:`;
- every PromQL range window, `[5m]`, and both parts of a subquery, `[1h:1m]`;
- every PromQL `offset` (`offset 1d`, `offset -5m`).

Each compressed duration is rounded to whole seconds and is at least 1s, because Prometheus cannot
scrape or evaluate faster than that. Everything else is kept: thresholds (also those that are times
written as numbers, such as rollbackd's `> 26 * 3600` for a stale snapshot), labels, annotations (a
`[5m]` in an annotation's text stays as written), recording rule names, groups and their `interval:`
(the evaluation interval is the test Prometheus's business, not the rule's). String
literals inside PromQL (label matchers such as `code=~"5.."`) are never touched.

With factor 60, `for: 3m` becomes `for: 3s`, `[5m]` becomes `[5s]`, `offset 1h` becomes `offset 1m`
and `offset 1d` becomes `offset 24m`; with 1s scrapes a `[3s]` window still holds enough samples
for `rate()`. `make e2e-real` runs the shipped rules unchanged.

The output is YAML again (comments are dropped); `promtool check rules` accepts it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["compress", "compress_duration", "compress_expr", "format_duration", "parse_duration"]

_UNITS_MS: dict[str, int] = {
    "y": 365 * 86_400_000,
    "w": 7 * 86_400_000,
    "d": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1_000,
    "ms": 1,
}
_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_DURATION_PART = re.compile(r"(\d+)(ms|[smhdwy])")
# A range selector or subquery: [5m], [1h:1m], [1h:] (the resolution may be omitted).
_RANGE = re.compile(rf"\[\s*({_DURATION})\s*(?::\s*({_DURATION})?\s*)?\]")
_OFFSET = re.compile(rf"\b(offset\s+)(-?)({_DURATION})\b")
# PromQL string literals: double or single quoted with backslash escapes, or raw backtick strings.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def parse_duration(text: str) -> int:
    """A Prometheus duration ('1h30m', '5m', '500ms') in milliseconds."""
    text = text.strip()
    if not re.fullmatch(_DURATION, text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS_MS[unit] for n, unit in _DURATION_PART.findall(text))


def format_duration(ms: int) -> str:
    """Milliseconds as a Prometheus duration, largest units first ('24m', '1h30m', '1d', '0s')."""
    if ms == 0:
        return "0s"
    parts: list[str] = []
    for unit in ("d", "h", "m", "s", "ms"):  # not y/w: 1y is 365d and 1w 7d, both exact in days
        n, ms = divmod(ms, _UNITS_MS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


def compress_duration(text: str, factor: int) -> str:
    """Divide one duration by `factor`, rounded to whole seconds, at least 1s ('3m', 60 -> '3s')."""
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, not {factor}")
    ms = parse_duration(text)
    if ms == 0:
        return "0s"
    seconds = max(1, (ms + factor * 500) // (factor * 1000))  # rounds half up
    return format_duration(seconds * 1000)


def compress_expr(expr: str, factor: int) -> str:
    """Compress the range windows, subquery steps and offsets of one PromQL expression."""

    def ranges(match: re.Match[str]) -> str:
        window = compress_duration(match.group(1), factor)
        if ":" not in match.group(0):
            return f"[{window}]"
        step = match.group(2)
        return f"[{window}:{compress_duration(step, factor) if step else ''}]"

    def offsets(match: re.Match[str]) -> str:
        return f"{match.group(1)}{match.group(2)}{compress_duration(match.group(3), factor)}"

    out: list[str] = []
    position = 0
    for literal in _STRING.finditer(expr):
        code = expr[position : literal.start()]
        out.append(_OFFSET.sub(offsets, _RANGE.sub(ranges, code)))
        out.append(literal.group(0))
        position = literal.end()
    out.append(_OFFSET.sub(offsets, _RANGE.sub(ranges, expr[position:])))
    return "".join(out)


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (most `expr:`s) as block literals, as the shipped files do."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _represent_str)


def _compress_rule(rule: dict[str, Any], factor: int) -> dict[str, Any]:
    rule = dict(rule)
    if "expr" in rule:
        rule["expr"] = compress_expr(str(rule["expr"]), factor)
    if "for" in rule:
        rule["for"] = compress_duration(str(rule["for"]), factor)
    return rule


def compress(rules_text: str, factor: int) -> str:
    """The rules file `rules_text` with every `for:`, range window and offset divided by `factor`."""
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, not {factor}")
    document = yaml.safe_load(rules_text)
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ValueError("not a Prometheus rules file: no top-level `groups` list")
    groups = [
        {**group, "rules": [_compress_rule(rule, factor) for rule in group.get("rules") or []]}
        for group in document["groups"]
    ]
    return yaml.dump({**document, "groups": groups}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
