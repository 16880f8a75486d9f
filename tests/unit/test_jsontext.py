"""one_shot(encoder) writes exactly encoder.encode's text (it only skips the per-call set-up)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from rollbackd.jsontext import one_shot

VALUES: list[Any] = [
    {"b": "2", "a": "1", "é": "ü\u2028", "nested": {"z": [1, 2.5, None, True, False], "y": ""}},
    {"alertname": "DependencyDown", "quote": 'say "hi"\n\\', "emoji": "\U0001f525"},
    [],
    {},
    "a plain string",
    12345678901234567890,
    -0.0,
    1e300,
    math.inf,
]


@pytest.mark.parametrize(
    "encoder",
    [
        json.JSONEncoder(separators=(",", ":"), sort_keys=True),
        json.JSONEncoder(),
        json.JSONEncoder(ensure_ascii=False),
    ],
)
def test_the_text_is_the_encoders_own(encoder: json.JSONEncoder) -> None:
    encode = one_shot(encoder)
    for value in VALUES:
        assert encode(value) == encoder.encode(value)


def test_what_the_encoder_refuses_it_refuses() -> None:
    encode = one_shot(json.JSONEncoder(allow_nan=False))
    with pytest.raises(ValueError):
        encode({"x": math.nan})
    with pytest.raises(TypeError):
        encode({"x": object()})
