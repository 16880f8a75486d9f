"""Plumbing shared by the verifiers: JSON paths, templates, HTTP calls that classify their failures,
percentiles. One place, so every verifier says "connection refused" the same way."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

_PART = re.compile(r"([^.\[\]]+)|\[(\*|-?\d+)\]")
MISSING: Any = object()


def parse_path(path: str) -> list[str | int]:
    """``contexts[*].text`` -> ["contexts", "*", "text"]; ``a.b[0]`` -> ["a", "b", 0]. ValueError if malformed."""
    parts: list[str | int] = []
    pos = 0
    for match in _PART.finditer(path):
        gap = path[pos : match.start()]
        if gap not in ("", "."):
            raise ValueError(f"bad JSON path {path!r} near {gap!r}")
        key, index = match.groups()
        parts.append(key if key is not None else ("*" if index == "*" else int(index)))
        pos = match.end()
    if not parts or path[pos:] not in ("",):
        raise ValueError(f"bad JSON path {path!r}")
    return parts


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path (``[*]`` maps over a list and returns a list); MISSING if absent."""
    return _walk(data, parse_path(path))


def _walk(data: Any, parts: Sequence[str | int]) -> Any:
    if not parts:
        return data
    head, rest = parts[0], parts[1:]
    if head == "*":
        if not isinstance(data, list):
            return MISSING
        values = [_walk(item, rest) for item in data]
        return [v for v in values if v is not MISSING]
    if isinstance(head, int):
        if not isinstance(data, list) or not -len(data) <= head < len(data):
            return MISSING
        return _walk(data[head], rest)
    if not isinstance(data, Mapping) or head not in data:
        return MISSING
    return _walk(data[head], rest)


def render_template(template: Any, values: Mapping[str, str]) -> Any:
    """Replace ``{name}`` in every string of a JSON template; a string that is exactly ``{name}`` becomes
    the value itself. Values are data: they are never parsed as templates again."""
    if isinstance(template, str):
        for name, value in values.items():
            if template == "{" + name + "}":
                return value
        out = template
        for name, value in values.items():
            out = out.replace("{" + name + "}", value)
        return out
    if isinstance(template, list):
        return [render_template(t, values) for t in template]
    if isinstance(template, dict):
        return {k: render_template(v, values) for k, v in template.items()}
    return template


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    text: str
    seconds: float

    def json(self) -> Any:
        """The parsed body, or MISSING when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return MISSING


class Unreachable(Exception):
    """No HTTP answer at all: connection refused, DNS, timeout. The message says which."""


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    data: str | None = None,
) -> Reply:
    started = time.perf_counter()
    try:
        async with session.request(
            method,
            url,
            headers=dict(headers or {}),
            json=json_body,
            data=data,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text(errors="replace")
            return Reply(resp.status, text, time.perf_counter() - started)
    except aiohttp.ClientConnectorError as exc:
        raise Unreachable(f"{method} {url}: connection refused ({exc.os_error.strerror or exc})") from exc
    except TimeoutError as exc:
        raise Unreachable(f"{method} {url}: no answer within {timeout:g}s") from exc
    except aiohttp.ClientError as exc:
        raise Unreachable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"User-Agent": "rollbackd-verify"})


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def short(text: str, limit: int = 160) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
