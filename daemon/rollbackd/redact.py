"""One place that decides what a secret looks like in text leaving the daemon (step errors, step
outputs, logs, Slack, the page): every value the config loaded as a secret (registered at load),
the userinfo of a URL, token-like query parameters and credential headers. Each is replaced by
``***``; text is then cut to ``limit`` characters.

    redact.register(value)              # config.py, for every secret it reads
    redact.text("GET https://u:pw@h/x?token=t: 502 ...")  # -> "GET https://***@h/x?token=***: 502 ..."
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_MIN_SECRET = 4  # shorter values would mask ordinary words; no real secret is this short
_secrets: set[str] = set()
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]*@")
_QUERY = re.compile(
    r"(?i)([?&;](?:[a-z0-9_.-]*(?:token|key|secret|password|passwd|pwd|sig|signature|auth|credential|session)"
    r"[a-z0-9_.-]*)=)[^&#\s\"']*"
)
_HEADER = re.compile(
    r"(?i)((?:authorization|proxy-authorization|x-api-key|api-key|x-auth-token|cookie|set-cookie)[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}")
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "x-auth-token", "cookie"})


def register(*values: str | None) -> None:
    """Remember secret values, so that any text carrying one is masked wherever it goes."""
    _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET)


def known() -> frozenset[str]:
    return frozenset(_secrets)


def contains_secret(value: str) -> bool:
    return any(s in value for s in _secrets)


def text(value: str, limit: int = 500) -> str:
    """``value`` with every secret masked, cut to ``limit`` characters (marked with an ellipsis)."""
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first: a secret may contain another
        if secret in value:
            value = value.replace(secret, MASK)
    value = _USERINFO.sub(rf"\1{MASK}@", value)
    value = _QUERY.sub(rf"\1{MASK}", value)
    value = _HEADER.sub(rf"\1{MASK}", value)
    value = _BEARER.sub(rf"\1 {MASK}", value)
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


def url(value: str) -> str:
    """A URL fit for a message: no userinfo, no token-like query values, never truncated mid-host."""
    return text(value, limit=300)


def headers(values: Mapping[str, str]) -> dict[str, str]:
    """Headers fit for a message: credential headers masked, the rest redacted as text."""
    return {k: MASK if k.lower() in SECRET_HEADERS else text(v, 200) for k, v in values.items()}


def restore(stored: Any, current: Any) -> Any:
    """``stored`` (a redacted structure) with each masked string taken back from ``current`` at the same
    place: an incident journals its plan redacted and runs it with the credentials of the config."""
    if isinstance(stored, str):
        return current if MASK in stored and isinstance(current, str) else stored
    if isinstance(stored, Mapping) and isinstance(current, Mapping):
        return {k: restore(v, current.get(k)) for k, v in stored.items()}
    if isinstance(stored, list) and isinstance(current, list):
        return [restore(v, current[i] if i < len(current) else None) for i, v in enumerate(stored)]
    return stored


def data(value: Any, limit: int = 4000) -> Any:
    """A JSON-like structure with every string redacted (step outputs: stdout, response bodies)."""
    if isinstance(value, str):
        return text(value, limit)
    if isinstance(value, Mapping):
        return {k: data(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [data(v, limit) for v in value]
    return value
