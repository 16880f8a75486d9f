"""Ports for the servers tests start: rollbackd.ports.free_port (below the kernel's ephemeral range),
within this xdist worker's own slice of that range. A test that kills a daemon and starts it again on
the same port leaves the port free for a moment; without slices another worker's test could pick it
then and bind it first (seen once in CI: the restarted daemon exited "address already in use")."""

from __future__ import annotations

import os
import random

from rollbackd import ports

_ATTEMPTS = 64


def worker_slice() -> tuple[int, int]:
    """[low, high) of this worker: the range below the ephemeral ports, cut in one slice per worker."""
    low = ports.ephemeral_low()
    start = max(1024, low - 20_000)
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0
    size = (low - start) // workers
    return start + (index % workers) * size, start + (index % workers + 1) * size


def free_port() -> int:
    low, high = worker_slice()
    if high - low >= _ATTEMPTS:
        for _ in range(_ATTEMPTS):
            port = random.randrange(low, high)
            if ports.bindable(port):
                return port
    return ports.free_port()
