"""A small HTTP client on urllib (stdlib only: `rollbackd status` must start instantly)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_VERIFY_FAILED = 0, 1, 2, 3, 4
# The verify gate contract (README "Exit codes"): 0 PASS, 4 FAIL, 5 ERROR, 6 INCONCLUSIVE; gate on non-zero.
EXIT_VERIFY_ERROR, EXIT_VERIFY_INCONCLUSIVE = 5, 6


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(body.get("detail") or body.get("error") or f"HTTP {status}")


class Unreachable(Exception):
    pass


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                result: dict[str, Any] = json.loads(resp.read() or b"{}")
                return result
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"{}")
            except ValueError:
                payload = {"detail": f"HTTP {exc.code}"}
            raise ApiError(exc.code, payload if isinstance(payload, dict) else {"detail": str(payload)}) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"cannot reach rollbackd at {self.url}: {reason}") from exc

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("POST", path, body or {})


def from_args(url: str | None, token: str | None, config: str | None) -> Client:
    """Flags first, then ROLLBACKD_URL / ROLLBACKD_API_TOKEN, then the config file's listen and token."""
    url = url or os.environ.get("ROLLBACKD_URL")
    token = token or os.environ.get("ROLLBACKD_API_TOKEN")
    if config and (url is None or token is None):
        from rollbackd.wiring import load_settings as load  # only here: reading the config needs pydantic

        settings = load(config)
        host, _, port = settings.listen.rpartition(":")
        url = url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        token = token or settings.auth.api_tokens[0].token.get_secret_value()
    return Client(url or "http://127.0.0.1:8085", token)
