"""Never without a running container: judge a freshly started container (running, healthy before its
deadline) and, when it fails, put the previous one back running under its name and prove it serves.

"Serving" is an HTTP answer of any status from the container's health URL (the previous release may be
the bad one: it answers, badly, which beats no answer); "healthy" is a 2xx. Podman can hold the port (a failed
start leaks its listener until the failed container is stopped), so the new one is stopped before it is
removed and a start refused with "address already in use" is retried until ``port_release_timeout``.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import docker
import requests

from rollbackd.deploy.engine import Engine, pause


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status ``url`` answers, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    detail: str


def await_healthy(engine: Engine, ident: str, url: str | None, deadline: float, interval: float) -> Verdict:
    """Healthy (2xx) before the monotonic deadline; fails early when the container stops running."""
    last = "no answer"
    while True:
        if url is None:
            found = engine.inspect(ident) or {}
            return Verdict(bool((found.get("State") or {}).get("Running")), "running (no health URL)")
        status = http_status(url)
        if status is not None and 200 <= status < 300:
            return Verdict(True, f"healthy: {url} answered {status}")
        last = f"HTTP {status}" if status is not None else "no answer"
        state = (engine.inspect(ident) or {}).get("State") or {}
        if not state.get("Running"):
            return Verdict(
                False,
                f"exited (code {state.get('ExitCode')}, {state.get('Status')}) before it was healthy; {url}: {last}",
            )
        if time.monotonic() >= deadline:
            return Verdict(False, f"was not healthy within its health timeout: {url}: {last}")
        pause(interval)


def _start_when_port_free(engine: Engine, ident: str, deadline: float) -> str | None:
    """Start ``ident``; retry while the engine still holds its port. None, or why it did not start."""
    while True:
        try:
            engine.start(ident)
            return None
        except (docker.errors.DockerException, requests.RequestException) as exc:
            message = str(getattr(exc, "explanation", None) or exc)
            if "address already in use" not in message.lower() or time.monotonic() >= deadline:
                return message
            pause(0.2)


def _serving(url: str | None, deadline: float, interval: float) -> Verdict:
    if url is None:
        return Verdict(True, "running (no health URL to probe)")
    while True:
        status = http_status(url)
        if status is not None:
            return Verdict(True, f"serving: {url} answered HTTP {status}")
        if time.monotonic() >= deadline:
            return Verdict(False, f"{url} does not answer")
        pause(interval)


def put_back(
    engine: Engine,
    *,
    name: str,
    old: dict[str, Any],
    new_id: str | None,
    url: str | None,
    port_timeout: float,
    health_timeout: float,
    interval: float,
) -> Verdict:
    """Remove the new container, give the old one its name back, start it and prove it serves."""
    try:
        if new_id is not None:
            # a stop first: after a failed start Podman 4.3 keeps the port open in its API service until
            # the container is stopped (a remove alone leaks it, and the old container cannot bind it)
            with contextlib.suppress(docker.errors.APIError):
                engine.stop(new_id, 1)
            engine.remove(new_id)
        if engine.id_of(name) != old["Id"]:
            engine.rename(old["Id"], name)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        return Verdict(False, f"could not give {name} back to the previous container: {exc}")
    if not engine.running(old["Id"]):
        refused = _start_when_port_free(engine, old["Id"], time.monotonic() + port_timeout)
        if refused is not None:
            return Verdict(False, f"the previous container did not start: {refused}")
    return _serving(url, time.monotonic() + health_timeout, interval)
