"""Start the Qdrant test server (tests/qdrant_server) as a separate process, like a real Qdrant node.

    with QdrantTestServer() as qdrant:            # free 127.0.0.1 port, temporary storage
        client = AsyncQdrantClient(url=qdrant.url, prefer_grpc=False)
        qdrant.inject_fault(r"/snapshots/recover$", method="PUT", status=500)

Fixtures (import them into a test module or conftest):
    qdrant_server          a running server, function scope
    qdrant_server_factory  `factory(api_key=None, storage_dir=None) -> QdrantTestServer`, all stopped at teardown

`file://` recovery locations must lie inside `snapshots_dir`, as they must inside a real node's
snapshots path. The server saves its state on a graceful stop, so `restart()` keeps collections.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (http://\S+)")


class QdrantTestServer:
    """A Qdrant test server subprocess on 127.0.0.1; `.url` once started."""

    def __init__(
        self, storage_dir: Path | None = None, *, api_key: str | None = None, startup_timeout: float = 30.0
    ) -> None:
        self._own_dir = storage_dir is None
        base = Path(tempfile.mkdtemp(prefix="qdrant-test-")) if storage_dir is None else Path(storage_dir)
        self.storage_dir = base.resolve()
        self.api_key = api_key
        self.startup_timeout = startup_timeout
        self.log_path = self.storage_dir.parent / f"{self.storage_dir.name}.server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None
        self.returncode: int | None = None  # of the last stopped process

    # --- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the Qdrant test server is not running")
        return self._url

    @property
    def snapshots_dir(self) -> Path:
        """Where the server keeps snapshots: `<snapshots_dir>/<collection>/<name>.snapshot`."""
        return self.storage_dir / "snapshots"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> QdrantTestServer:
        if self._proc is not None:
            raise RuntimeError("already started")
        cmd = [
            sys.executable,
            "-m",
            "tests.qdrant_server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--storage",
            str(self.storage_dir),
            "--exit-with-parent",
        ]
        if self.api_key is not None:
            cmd += ["--api-key", self.api_key]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        log_offset = len(self._log_text())
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._url = self._wait_listening(log_offset)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _wait_listening(self, offset: int) -> str:
        deadline = time.monotonic() + self.startup_timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            found = _LISTENING.search(self._log_text()[offset:])
            if found:
                return found.group(1)
            if self._proc.poll() is not None:
                raise RuntimeError(f"Qdrant test server exited ({self._proc.returncode}):\n{self._log_text()}")
            time.sleep(0.02)
        raise RuntimeError(f"Qdrant test server did not start in {self.startup_timeout} s:\n{self._log_text()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Qdrant test server not ready in {self.startup_timeout} s")
            time.sleep(0.02)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the server saves its state), then SIGKILL if it does not exit in `timeout`."""
        proc, self._proc, self._url = self._proc, None, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.returncode = proc.returncode

    def kill(self) -> None:
        """SIGKILL: what changed since the last start is lost (no WAL in the test server)."""
        proc, self._proc, self._url = self._proc, None, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            self.returncode = proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.storage_dir, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> QdrantTestServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- test hooks ----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["result"]

    def inject_fault(
        self,
        path_regex: str,
        *,
        method: str | None = None,
        status: int | None = 500,
        message: str | None = None,
        delay_s: float = 0.0,
        times: int | None = 1,
        drop: bool = False,
    ) -> dict[str, Any]:
        """Arm a fault: matching requests wait `delay_s`, then fail with `status` (None: proceed normally)
        or have their connection dropped; `times` requests are hit (None: until `clear_faults`)."""
        spec = {
            "path_regex": path_regex,
            "method": method,
            "status": status,
            "message": message,
            "delay_s": delay_s,
            "times": times,
            "drop": drop,
        }
        result: dict[str, Any] = self._call("POST", "/__test__/faults", spec)
        return result

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/__test__/faults")
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/__test__/faults")


@pytest.fixture
def qdrant_server(tmp_path: Path) -> Iterator[QdrantTestServer]:
    server = QdrantTestServer(tmp_path / "qdrant")
    with server:
        yield server


@pytest.fixture
def qdrant_server_factory(tmp_path: Path) -> Iterator[Callable[..., QdrantTestServer]]:
    servers: list[QdrantTestServer] = []

    def factory(*, api_key: str | None = None, storage_dir: Path | None = None) -> QdrantTestServer:
        directory = storage_dir or tmp_path / f"qdrant-{len(servers)}"
        server = QdrantTestServer(directory, api_key=api_key)
        servers.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in servers:
            server.close()
