"""Alertmanager webhook v4 bodies -> Alert records. Strict with the JSON, lenient with new fields.

Every problem is a PayloadError naming the field (``alerts[2].startsAt: ...``), which the API answers
with 400: invalid UTF-8, duplicate keys, NaN/Infinity, numbers out of range, nesting deeper than 64,
unpaired surrogates and NUL characters (neither can be stored, logged or passed to a child) and every
shape error. Alertmanager's fields take exactly the JSON type Alertmanager writes (Go's encoder: an
integer is never ``0.0``, ``-0``, ``"0"`` or ``true``; a time or URL is never ``null``).
Labels are data: kept exactly as sent (no case folding, no normalisation).
"""

from __future__ import annotations

import functools
import json
import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from rollbackd.errors import PayloadError
from rollbackd.records import Alert
from rollbackd.registry import format_loc

MAX_DEPTH = 64
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")
_GO_ZERO_YEAR = 1
# Only an escape can put a lone surrogate or a NUL into a parsed string (raw ones are invalid UTF-8 or JSON).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 time string")
    return _rfc3339(value)


@functools.lru_cache(maxsize=4096)
def _rfc3339(value: str) -> datetime:
    """Cached: every firing alert's endsAt is Go's zero time, and the alerts of one rule evaluation
    share their startsAt (a datetime is immutable; a refused value raises and is not cached)."""
    m = _RFC3339.match(value)
    if not m:
        raise ValueError(f"not an RFC 3339 time with offset: {value[:64]!r}")
    date, clock, frac, offset = m.groups()
    micro = (frac or "").ljust(6, "0")[:6]  # Go writes up to 9 digits; Python keeps 6
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{date}T{clock}.{micro}{offset}")
    except ValueError as exc:
        raise ValueError(f"not a valid time: {value[:64]!r}") from exc


Time = Annotated[datetime, BeforeValidator(parse_time)]
Labels = dict[StrictStr, StrictStr]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class AlertV4(_Model):
    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels | None = None
    starts_at: Time = Field(alias="startsAt")
    ends_at: Time | None = Field(default=None, alias="endsAt")
    generator_url: StrictStr | None = Field(default=None, alias="generatorURL")
    fingerprint: Annotated[StrictStr, Field(min_length=1, max_length=128)]

    @field_validator("ends_at", "generator_url", mode="before")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        return _present(v)

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, v: dict[str, str]) -> dict[str, str]:
        if not v.get("alertname"):
            raise ValueError("labels must contain a non-empty alertname")
        return v


class WebhookV4(_Model):
    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: StrictStr
    group_key: StrictStr = Field(alias="groupKey")
    external_url: StrictStr = Field(alias="externalURL")
    group_labels: Labels = Field(alias="groupLabels")
    common_labels: Labels = Field(alias="commonLabels")
    common_annotations: Labels | None = Field(default=None, alias="commonAnnotations")
    truncated_alerts: Annotated[StrictInt, Field(ge=0)] | None = Field(default=None, alias="truncatedAlerts")
    alerts: Annotated[list[AlertV4], Field(min_length=1, max_length=10_000)]

    @field_validator("truncated_alerts", mode="before")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        return _present(v)


def _present(value: Any) -> Any:
    """Absent is fine (older Alertmanagers omit some fields); an explicit null is never what Go writes."""
    if value is None:
        raise ValueError("must not be null (Alertmanager always writes a value)")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # built in C; a shorter dict than the pairs means a key came twice
    if len(out) != len(pairs):
        raise PayloadError("", f"duplicate key {_first_repeated(pairs)[:64]!r}")
    return out


def _first_repeated(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    raise AssertionError("no key repeats")


def _reject_constant(name: str) -> Any:
    raise PayloadError("", f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError("", f"number out of range: {text[:40]}")
    return value


def _bounded_int(text: str) -> int | float:
    if len(text.lstrip("-")) > 19 or not -(2**63) <= (value := int(text)) < 2**63:
        raise PayloadError("", f"number out of range: {text[:40]}")
    if value == 0 and text.startswith("-"):
        return -0.0  # Go never writes -0: a float here makes a strict integer field refuse it, naming the field
    return value


def _depth(root: Any) -> int:
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


# One decoder, made once (json.loads with hooks builds a decoder and its scanner on every call).
_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_reject_constant, parse_float=_finite, parse_int=_bounded_int
)


def loads_strict(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("", f"body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        data = _DECODER.decode(text)
    except PayloadError:
        raise
    except RecursionError as exc:
        raise PayloadError("", f"JSON nested deeper than {MAX_DEPTH}") from exc
    except ValueError as exc:  # JSONDecodeError and int-digit limits are ValueErrors
        raise PayloadError("", f"invalid JSON: {exc}") from exc
    # the brackets in the text bound the depth from above: most bodies need no walk (a storm's are small)
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise PayloadError("", f"JSON nested deeper than {MAX_DEPTH}")
    if _SUSPECT_ESCAPE.search(text):
        _check_strings(data)
    return data


def _string_problem(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired surrogate (not valid Unicode)"
    return None


def _printable(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")


def _check_strings(root: Any) -> None:
    """Refuse a string (key or value) that no store, log line or child environment can carry; name it."""
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{_printable(key)}".lstrip(".")
            problem = (_string_problem(key) if isinstance(key, str) else None) or (
                _string_problem(value) if isinstance(value, str) else None
            )
            if problem:
                raise PayloadError(where, problem)
            stack.append((value, where))


def parse_webhook(body: bytes) -> tuple[WebhookV4, list[Alert]]:
    data = loads_strict(body)
    if not isinstance(data, dict):
        raise PayloadError("", "expected a JSON object (Alertmanager webhook v4)")
    try:
        payload = WebhookV4.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = format_loc(err["loc"]).lstrip(".")
        raise PayloadError(field, err["msg"]) from exc
    return payload, [_to_alert(payload, a) for a in payload.alerts]


def _to_alert(payload: WebhookV4, a: AlertV4) -> Alert:
    ends = a.ends_at if a.ends_at is not None and a.ends_at.year > _GO_ZERO_YEAR else None
    return Alert(
        fingerprint=a.fingerprint,
        status=a.status,
        alertname=a.labels["alertname"],
        labels=a.labels,
        annotations=a.annotations or {},
        starts_at=a.starts_at,
        ends_at=ends,
        generator_url=a.generator_url,
        receiver=payload.receiver,
        group_key=payload.group_key,
        external_url=payload.external_url,
    )
