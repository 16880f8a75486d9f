"""Alertmanager's routing tree, walked as Alertmanager 0.25 walks it: which receivers get an alert
with these labels. Pure, over the YAML of ``GET /api/v2/status`` (``config.original``).

A route matches when all its matchers do (``matchers``, and the older ``match`` / ``match_re``);
regular expressions are anchored. Children are tried in order; a matching child ends the search
unless it has ``continue: true``; when no child matches, the route itself receives the alert.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


def parse_matcher(text: str) -> tuple[str, str, str]:
    """``team=~"rag|rollbackd"`` -> ("team", "=~", "rag|rollbackd"); the value may be unquoted."""
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(f"not an Alertmanager matcher: {text!r}")
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].encode().decode("unicode_escape")
    return name, op, value


def _one(labels: Mapping[str, str], name: str, op: str, value: str) -> bool:
    actual = labels.get(name, "")
    hit = re.fullmatch(value, actual) is not None if op in ("=~", "!~") else actual == value
    return hit if op in ("=", "=~") else not hit


def route_matches(route: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for matcher in route.get("matchers") or []:
        if not _one(labels, *parse_matcher(str(matcher))):
            return False
    for name, value in (route.get("match") or {}).items():
        if labels.get(name, "") != value:
            return False
    return all(_one(labels, name, "=~", value) for name, value in (route.get("match_re") or {}).items())


def receivers_for(route: Mapping[str, Any], labels: Mapping[str, str], inherited: str = "") -> list[str]:
    """Receiver names an alert with ``labels`` is sent to, from the root ``route``, in order."""
    receiver = str(route.get("receiver") or inherited)
    out: list[str] = []
    for child in route.get("routes") or []:
        if not route_matches(child, labels):
            continue
        out += receivers_for(child, labels, receiver)
        if not child.get("continue", False):
            break
    return out or [receiver]


def webhooks_of(config: Mapping[str, Any], receiver: str) -> list[dict[str, Any]]:
    for entry in config.get("receivers") or []:
        if entry.get("name") == receiver:
            return list(entry.get("webhook_configs") or [])
    return []
