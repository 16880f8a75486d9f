"""A client polling a service every 20 ms while something switches it (a redeploy, a swap), used by the
deployer test and bench/revert alike.

Podman's port forwarding may hold a connection while no container serves it rather than refuse it, so
unavailability is the longest gap between two successful answers, minus the polling interval (failed
requests count as gaps too). Each request times out after 0.3 s: a dropped SYN would wait 1 s."""

from __future__ import annotations

import threading
import time
import urllib.request


class Poller:
    INTERVAL = 0.02

    def __init__(self, port: int, path: str = "/version") -> None:
        self.url = f"http://127.0.0.1:{port}{path}"
        self.stop = threading.Event()
        self.ok_at: list[float] = []
        self.failures = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=0.3) as resp:
                    resp.read()
                self.ok_at.append(time.monotonic())
            except OSError:
                self.failures += 1
            time.sleep(self.INTERVAL)

    def __enter__(self) -> Poller:
        self.thread.start()
        time.sleep(0.15)
        return self

    def __exit__(self, *exc: object) -> None:
        # keep polling until a request *started* after the operation has answered: a request held or
        # refused during the switch must not end the measurement early
        done = time.monotonic()
        deadline = done + 15
        while time.monotonic() < deadline and not any(t > done + 0.1 for t in self.ok_at):
            time.sleep(0.01)
        self.stop.set()
        self.thread.join(10)

    @property
    def unavailable(self) -> float:
        gaps = [b - a for a, b in zip(self.ok_at, self.ok_at[1:], strict=False)]
        return max(0.0, max(gaps, default=0.0) - self.INTERVAL)
