"""Point ids, vectors, payload selectors and filters as Qdrant's REST API reads them.

Ids are unsigned integers or UUIDs (normalized to the hyphenated lower-case form); points are ordered
integers first, then UUIDs, as Qdrant's `ExtendedPointId` ordering does. Filters cover `must`, `should`,
`must_not` (a single condition or a list) with field conditions (`match` value/any/except, `range`,
`is_empty`, `is_null`), `has_id`, `is_empty`/`is_null` conditions and nested filters.
"""

from __future__ import annotations

import math
import operator
import struct
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .errors import QdrantError, format_error

PointId = int | str
SortKey = tuple[int, int]
Payload = dict[str, Any]

U64_MAX = 2**64 - 1
_F32 = struct.Struct("<f")


def parse_point_id(value: object) -> PointId:
    if isinstance(value, bool):
        raise format_error("JSON body", f"invalid type: boolean `{str(value).lower()}`, expected point id")
    if isinstance(value, int):
        if 0 <= value <= U64_MAX:
            return value
        raise format_error("JSON body", f"invalid value: integer `{value}`, expected u64")
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise format_error("JSON body", f"Unable to parse UUID: {value}") from None
    raise format_error("JSON body", "data did not match any variant of untagged enum ExtendedPointId")


def sort_key(point_id: PointId) -> SortKey:
    if isinstance(point_id, int):
        return (0, point_id)
    return (1, uuid.UUID(point_id).int)


def parse_dense_vector(value: object, dim: int) -> list[float]:
    """One unnamed dense vector: a list of numbers, or `{"": [...]}` (the unnamed vector's name)."""
    if isinstance(value, Mapping):
        unknown = [name for name in value if name != ""]
        if unknown:
            raise QdrantError(400, f"Wrong input: Not existing vector name error: {unknown[0]}")
        value = value.get("")
    if not isinstance(value, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        raise format_error("JSON body", "data did not match any variant of untagged enum VectorStruct")
    if len(value) != dim:
        raise QdrantError(400, f"Wrong input: Vector dimension error: expected dim: {dim}, got {len(value)}")
    return [float(x) for x in value]


def normalize(vector: list[float]) -> list[float]:
    """Qdrant stores Cosine vectors normalized to unit length."""
    norm = math.hypot(*vector)
    if norm == 0.0:
        return vector
    return [x / norm for x in vector]


def f32_out(value: float) -> float:
    """The shortest decimal that reads back as the same float32, as Qdrant's JSON output writes it."""
    for digits in (6, 7, 8):
        candidate = float(f"{value:.{digits}g}")
        if _F32.unpack(_F32.pack(candidate))[0] == value:
            return candidate
    return float(f"{value:.9g}")


def select_payload(payload: Payload | None, selector: object) -> Payload | None:
    """Apply `with_payload` (bool, list of keys, {"include": [...]}, {"exclude": [...]})."""
    if selector is None or selector is True:
        return dict(payload or {})
    if selector is False:
        return None
    data = payload or {}
    if isinstance(selector, list):
        return {k: v for k, v in data.items() if k in selector}
    if isinstance(selector, Mapping):
        if "include" in selector:
            keys = selector["include"]
            return {k: v for k, v in data.items() if k in keys}
        if "exclude" in selector:
            keys = selector["exclude"]
            return {k: v for k, v in data.items() if k not in keys}
    raise format_error("JSON body", "data did not match any variant of untagged enum WithPayloadInterface")


def wants_vector(selector: object) -> bool:
    if selector is None or isinstance(selector, bool):
        return bool(selector)
    if isinstance(selector, list):
        return "" in selector
    raise format_error("JSON body", "data did not match any variant of untagged enum WithVector")


def _values_at(payload: Payload, key: str) -> list[Any]:
    """Values under a dotted key; arrays are flattened as Qdrant's payload paths do."""
    current: list[Any] = [payload]
    for part in key.replace("[]", "").split("."):
        found: list[Any] = []
        for item in current:
            if isinstance(item, Mapping) and part in item:
                value = item[part]
                found.extend(value if isinstance(value, list) else [value])
        current = found
    return current


def _match(match: Mapping[str, Any], values: list[Any]) -> bool:
    if "value" in match:
        return any(v == match["value"] and type(v) is type(match["value"]) for v in values)
    if "any" in match:
        return any(v in match["any"] for v in values)
    if "except" in match:
        return bool(values) and all(v not in match["except"] for v in values)
    if "text" in match:
        return any(isinstance(v, str) and match["text"] in v for v in values)
    raise QdrantError(400, f"Bad request: the Qdrant test server does not support match {sorted(match)}")


def _range(spec: Mapping[str, Any], values: list[Any]) -> bool:
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "gt": operator.gt,
        "gte": operator.ge,
        "lt": operator.lt,
        "lte": operator.le,
    }
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    bounds = [(ops[op], bound) for op, bound in spec.items() if bound is not None and op in ops]
    return any(all(check(v, bound) for check, bound in bounds) for v in numbers)


def _field_condition(cond: Mapping[str, Any], point_id: PointId, payload: Payload) -> bool:
    values = _values_at(payload, str(cond["key"]))
    if cond.get("match") is not None:
        return _match(cond["match"], values)
    if cond.get("range") is not None:
        return _range(cond["range"], values)
    if cond.get("is_empty") is not None:
        return (not values) == bool(cond["is_empty"])
    if cond.get("is_null") is not None:
        return (values == [None]) == bool(cond["is_null"])
    raise QdrantError(400, "Bad request: the Qdrant test server supports match, range, is_empty, is_null")


def _condition(cond: object, point_id: PointId, payload: Payload) -> bool:
    if not isinstance(cond, Mapping):
        raise format_error("JSON body", "data did not match any variant of untagged enum Condition")
    if "key" in cond:
        return _field_condition(cond, point_id, payload)
    if "has_id" in cond:
        return point_id in {parse_point_id(i) for i in cond["has_id"]}
    if "is_empty" in cond:
        return not _values_at(payload, str(cond["is_empty"]["key"]))
    if "is_null" in cond:
        return _values_at(payload, str(cond["is_null"]["key"])) == [None]
    if {"must", "should", "must_not"} & set(cond):
        return matches(cond, point_id, payload)
    raise QdrantError(400, f"Bad request: the Qdrant test server does not support condition {sorted(cond)}")


def _as_list(conds: object) -> list[object]:
    if conds is None:
        return []
    return conds if isinstance(conds, list) else [conds]


def matches(flt: Mapping[str, Any] | None, point_id: PointId, payload: Payload | None) -> bool:
    if not flt:
        return True
    if flt.get("min_should") is not None:
        raise QdrantError(400, "Bad request: the Qdrant test server does not support min_should")
    data = payload or {}
    if not all(_condition(c, point_id, data) for c in _as_list(flt.get("must"))):
        return False
    should = _as_list(flt.get("should"))
    if should and not any(_condition(c, point_id, data) for c in should):
        return False
    return not any(_condition(c, point_id, data) for c in _as_list(flt.get("must_not")))


def check_filter(flt: object) -> Mapping[str, Any] | None:
    if flt is None:
        return None
    if not isinstance(flt, Mapping):
        raise format_error("JSON body", "invalid type: expected struct Filter")
    unknown = set(flt) - {"must", "should", "must_not", "min_should"}
    if unknown:
        raise format_error(
            "JSON body",
            f"unknown field `{sorted(unknown)[0]}`, expected one of `should`, `min_should`, `must`, `must_not`",
        )
    return flt
