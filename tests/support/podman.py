"""A private Podman API service (Docker-compatible API v1.41) for integration and end-to-end tests.

`PodmanService` writes its own containers.conf (the rlimits and runtime this machine needs), starts
`podman system service --time=0 unix://<tmp>/podman.sock` and waits for `/_ping`. Everything a test creates
must carry `service.labels` (or a name from `service.name()`): on exit every such container is removed,
every image built through `images.py` is deleted and the API service is stopped. The label value is unique to
the session, so parallel sessions on the same (rootful, shared) Podman storage never remove each other's
containers; containers left by a session that died are reaped at the next start.

Podman is rootful here and stores images and containers machine-wide; the API socket is private.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
import pytest

PACKAGES = "podman runc netavark aardvark-dns iptables busybox-static"
LABEL = "rollbackd.test"
PID_LABEL = "rollbackd.test.pid"
API_VERSION = "1.41"
_STALE_TAG = re.compile(r"^localhost/rbt-(\d+)-[0-9a-f]+-")
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]

[engine]
runtime = "runc"
"""

__all__ = ["LABEL", "PACKAGES", "PID_LABEL", "PodmanService", "die_with_parent", "podman"]


def _require_binaries() -> None:
    missing = [b for b in ("podman", "runc") if shutil.which(b) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: install the Debian packages `{PACKAGES}` "
            "(the tests need a real Podman serving the Docker API).",
            pytrace=False,
        )


def _ping(sock_path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(sock_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            data = s.recv(4096)
    except OSError:
        return False
    return data.split(b"\r\n", 1)[0].split()[1:2] == [b"200"]


def die_with_parent() -> Callable[[], None] | None:
    """A Popen `preexec_fn` that SIGTERMs the child when this process dies (even by SIGKILL), so a killed
    test run leaves no API service behind. Linux only, and only from the main thread: the kernel signals
    when the creating *thread* exits."""
    if threading.current_thread() is not threading.main_thread() or not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PodmanService:
    """Context manager: a private Podman API service and the cleanup of what tests made with it."""

    def __init__(self, *, start_timeout: float = 30.0) -> None:
        self.session = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="rbt-podman-"))
        self.socket_path = str(self.workdir / "podman.sock")
        self.docker_host = f"unix://{self.socket_path}"
        self.conf_path = self.workdir / "containers.conf"
        self.env: dict[str, str] = {
            **os.environ,
            "CONTAINERS_CONF": str(self.conf_path),
            "DOCKER_HOST": self.docker_host,
        }
        self.images: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None
        self._counter = 0

    # ----------------------------------------------------------------- naming and labels
    @property
    def labels(self) -> dict[str, str]:
        """Labels every test container must carry so that the session removes it."""
        return {LABEL: self.session, PID_LABEL: str(os.getpid())}

    @property
    def name_prefix(self) -> str:
        return f"rbt-{self.session}-"

    def name(self, hint: str = "c") -> str:
        """A container name unique to this session (also cleaned up by prefix)."""
        self._counter += 1
        return f"{self.name_prefix}{hint}-{self._counter}"

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> PodmanService:
        _require_binaries()
        self.conf_path.write_text(CONTAINERS_CONF)
        log = (self.workdir / "service.log").open("wb")
        try:
            self._proc = subprocess.Popen(
                ["podman", "system", "service", "--time=0", self.docker_host],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while not _ping(self.socket_path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                text = (self.workdir / "service.log").read_text(errors="replace")[-2000:]
                self.stop()
                pytest.fail(f"podman system service did not answer /_ping: {text}", pytrace=False)
            time.sleep(0.05)
        self.reap_stale()
        return self

    def client(self) -> docker.DockerClient:
        """The session's shared docker-py client (API version pinned: auto-detection costs ~0.5 s)."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.docker_host, version=API_VERSION, timeout=60)
        return self._client

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the podman CLI with this service's containers.conf."""
        proc = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def container_names(self) -> list[str]:
        """Every container's name, from one list call: docker-py's `containers.list()` inspects each container
        afterwards and fails when another session removes one in between (Podman's storage is shared)."""
        return [n.lstrip("/") for summary in self.client().api.containers(all=True) for n in summary.get("Names") or []]

    def track_image(self, image_id: str) -> None:
        self.images.append(image_id)

    # ----------------------------------------------------------------- cleanup
    def _ours(self, attrs: dict[str, Any]) -> bool:
        labels = attrs.get("Labels") or {}
        names = [n.lstrip("/") for n in attrs.get("Names") or []]
        return labels.get(LABEL) == self.session or any(n.startswith(self.name_prefix) for n in names)

    def remove_containers(self, *, predicate: Any = None) -> list[str]:
        """Force-remove this session's containers (or those `predicate(summary)` selects). Returns names."""
        api = self.client().api
        removed: list[str] = []
        pick = predicate or self._ours
        for summary in api.containers(all=True):
            if pick(summary):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    api.remove_container(summary["Id"], force=True, v=True)
                    removed.extend(n.lstrip("/") for n in summary.get("Names") or [])
        return removed

    def reap_stale(self) -> list[str]:
        """Remove test containers and images (tags `localhost/rbt-<pid>-...`, see images.session_tag) whose
        session's process is gone: what a killed earlier run left."""

        def dead(pid: str) -> bool:
            return pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid))

        removed = self.remove_containers(predicate=lambda c: dead((c.get("Labels") or {}).get(PID_LABEL, "")))
        api = self.client().api
        for image in _images(api):
            matches = [m for t in image.get("RepoTags") or [] if (m := _STALE_TAG.match(t))]
            if matches and all(dead(m.group(1)) for m in matches):
                with contextlib.suppress(docker.errors.APIError):
                    for m in matches:
                        api.remove_image(m.string)
                        removed.append(m.string)
        return removed

    def remove_images(self) -> None:
        api = self.client().api
        for image_id in reversed(self.images):
            try:
                api.remove_image(image_id)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError:
                # More than one tag (a test called image.tag()): untag each name; the last removes it.
                with contextlib.suppress(docker.errors.APIError):
                    for tag in api.inspect_image(image_id).get("RepoTags") or []:
                        api.remove_image(tag)
        self.images.clear()

    def stop(self) -> None:
        try:
            if self._proc is not None and self._proc.poll() is None and _ping(self.socket_path):
                self.remove_containers()
                self.remove_images()
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._proc is not None and self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=5)
            self._proc = None
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PodmanService:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def podman() -> Iterator[PodmanService]:
    """A private Podman API service for the whole session; everything labelled with it is removed after."""
    with PodmanService() as service:
        yield service


def _images(api: Any, attempts: int = 5) -> list[dict[str, Any]]:
    """Every image. Podman's list answers 500 "image not known" when another session removes an image
    while it lists (the storage is shared): listed again."""
    for attempt in range(attempts):
        try:
            return list(api.images())
        except docker.errors.APIError as exc:
            if "image not known" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2)
    return []
