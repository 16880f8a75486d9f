"""Follow a long operation the daemon runs (an incident, a snapshot job) by polling short requests, instead of
holding one request open until it times out. A poll that fails is retried: the daemon is called unreachable
only when it has not answered for ``patience`` seconds, and then the message says the operation goes on.
Standard library only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rollbackd.cli.client import Unreachable

Body = dict[str, Any]


def follow(
    client: Any,
    path: str,
    finished: Callable[[Body], bool],
    *,
    on_update: Callable[[Body], None] | None = None,
    interval: float = 1.0,
    patience: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Body:
    """GET ``path`` until ``finished(body)``; ``on_update`` sees every answer (progress lines)."""
    silent_since: float | None = None
    while True:
        try:
            body: Body = client.get(path)
        except Unreachable as exc:
            silent_since = silent_since if silent_since is not None else clock()
            if clock() - silent_since > patience:
                raise Unreachable(
                    f"{exc}; no answer for {patience:g}s while following {path} (the operation "
                    "goes on in the daemon: look again with the same command or `rollbackd show`)"
                ) from exc
            sleep(interval)
            continue
        silent_since = None
        if on_update is not None:
            on_update(body)
        if finished(body):
            return body
        sleep(interval)
