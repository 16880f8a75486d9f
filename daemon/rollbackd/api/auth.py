"""Bearer tokens, compared in constant time, never logged. Checked before the body is read.

A header that is not printable ASCII (a latin-1 byte, undecodable bytes that arrive as surrogates)
is no token at all: 401, like a wrong one, never an encoding error."""

from __future__ import annotations

import hmac

from aiohttp import web
from pydantic import SecretStr


def bearer(request: web.Request) -> str | None:
    """The token of exactly one ``Authorization: Bearer <token>`` header, else None."""
    values = request.headers.getall("Authorization", [])
    if len(values) != 1:
        return None
    if not values[0].isascii() or not values[0].isprintable():
        return None
    scheme, _, token = values[0].partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def match(token: str | None, candidates: list[tuple[str, SecretStr]]) -> str | None:
    """The name of the matching token. Every candidate is compared, so timing says nothing."""
    found: str | None = None
    given = (token or "").encode()
    for name, secret in candidates:
        if hmac.compare_digest(given, secret.get_secret_value().encode()) and token is not None:
            found = name
    return found
