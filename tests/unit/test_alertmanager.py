"""Alertmanager v4 parsing: the real 0.25 bodies parse; every bad class is a PayloadError naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rollbackd.alertmanager import parse_time, parse_webhook
from rollbackd.errors import PayloadError
from tests.conftest import load_fixture


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def test_real_fixtures_parse() -> None:
    _, firing = parse_webhook(body(load_fixture("alertmanager-0.25-firing.json")))
    _, resolved = parse_webhook(body(load_fixture("alertmanager-0.25-resolved.json")))
    assert firing[0].status == "firing" and firing[0].ends_at is None  # Go's zero time means unset
    assert resolved[0].status == "resolved" and resolved[0].ends_at is not None
    assert firing[0].fingerprint == resolved[0].fingerprint
    assert firing[0].key != resolved[0].key
    assert firing[0].labels["service"] == "checkout"


def test_nine_fractional_digits_as_go_writes() -> None:
    t = parse_time("2026-11-21T22:00:26.123456789+01:00")
    assert t.microsecond == 123456 and t.utcoffset() is not None
    with pytest.raises(ValueError):
        parse_time("2026-11-21T22:00:26")  # no offset
    with pytest.raises(ValueError):
        parse_time("2026-11-21 22:00:26Z")


def mutate(path: str, value: Any) -> dict[str, Any]:
    payload = load_fixture("alertmanager-0.25-firing.json")
    node: Any = payload
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return payload


_DELETE = object()

BAD = [
    ("version", "3", "version"),
    ("alerts", [], "alerts"),
    ("alerts.0.startsAt", "yesterday", "alerts[0].startsAt"),
    ("alerts.0.status", "pending", "alerts[0].status"),
    ("alerts.0.labels", {"service": "rag"}, "alerts[0].labels"),
    ("alerts.0.labels.severity", 3, "alerts[0].labels.severity"),
    ("alerts.0.fingerprint", _DELETE, "alerts[0].fingerprint"),
    ("commonLabels", [], "commonLabels"),
    ("groupKey", None, "groupKey"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD, ids=[b[0] for b in BAD])
def test_shape_errors_name_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(PayloadError) as exc:
        parse_webhook(body(mutate(path, value)))
    assert exc.value.field == field
    assert str(exc.value).startswith(f"{field}: ")


def test_unknown_fields_and_null_annotations_are_accepted() -> None:
    payload = mutate("alerts.0.annotations", None)
    payload["somethingNew"] = {"x": 1}
    payload["alerts"][0]["future"] = True
    _, alerts = parse_webhook(body(payload))
    assert alerts[0].annotations == {}


RAW_BAD = [
    (b"\xff\xfe{}", "UTF-8"),
    (b'{"version": "4", "version": "4"}', "duplicate key"),
    (b'{"x": NaN}', "NaN"),
    (b'{"x": Infinity}', "Infinity"),
    (b'{"x": 1e400}', "out of range"),
    (b'{"x": 123456789012345678901234567890}', "out of range"),
    (b"[" * 65 + b"]" * 65, "nested deeper than 64"),
    (b"[" * 100000 + b"]" * 100000, "nested deeper"),
    (b'{"a": ', "invalid JSON"),
    (b"[]", "expected a JSON object"),
]


@pytest.mark.parametrize(("raw", "words"), RAW_BAD, ids=[w for _, w in RAW_BAD])
def test_strict_json(raw: bytes, words: str) -> None:
    with pytest.raises(PayloadError) as exc:
        parse_webhook(raw)
    assert words in str(exc.value)


def test_labels_are_kept_exactly() -> None:
    payload = mutate("alerts.0.labels.service", "Rag\u212a ")  # Kelvin sign and a trailing space stay as sent
    _, alerts = parse_webhook(body(payload))
    assert alerts[0].labels["service"] == "Rag\u212a "
