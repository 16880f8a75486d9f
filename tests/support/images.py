"""Container images built without a registry, and the kwargs to run them through docker-py.

Images are a busybox rootfs packed into a tar and `podman import`ed with `--change` lines (CMD, ENV, LABEL,
EXPOSE, WORKDIR). Podman names them `localhost/NAME:TAG`; compare images by ID (what the builders return),
never by name. Use `containers.create` + `start`, never `run` (it tries to pull) and never `exec_run`
(it leaves conmon processes behind).

- `build_web_image`: busybox httpd serving `/version` and, when healthy, `/health` (404 when not), under a
  PID 1 shell that turns SIGTERM into a prompt exit.
- `build_rag_image`: the reference RAG service (tests/ragservice). The rootfs holds no Python: the container
  runs this machine's interpreter with `/usr`, the interpreter's prefix, the venv and the app bind-mounted
  read-only, on the host network (so it reaches Postgres and Qdrant on 127.0.0.1; it listens on RAG_PORT).

Each image's ENV and LABEL carry its version, so a container inspects as the merge of image and operator
settings: the trap the Deployer must handle.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from docker.models.containers import Container
from docker.types import Mount

from tests.support.podman import PodmanService, die_with_parent
from tests.support.ports import free_port  # below the ephemeral range, in this worker's slice

WEB_PORT = 8080
RAG_PORT = 8000
REPO_ROOT = Path(__file__).resolve().parents[2]
RAGSERVICE_DIR = REPO_ROOT / "tests" / "ragservice"
APP_DIR = "/app"

WEB_START = """\
#!/bin/sh
/bin/busybox httpd -f -p "${WEB_PORT:-8080}" -h /www &
pid=$!
trap 'kill $pid; exit 0' TERM INT
wait $pid
"""

__all__ = [
    "RAGSERVICE_DIR",
    "RAG_PORT",
    "WEB_PORT",
    "RagServiceProcess",
    "build_image",
    "build_rag_image",
    "build_web_image",
    "container_python",
    "free_port",
    "rag_container_kwargs",
    "session_tag",
    "start_container",
    "wait_http",
    "web_container_kwargs",
]


def session_tag(podman: PodmanService, name: str, version: str) -> str:
    """An image tag unique to this test session (the image store is shared machine-wide)."""
    return f"rbt-{podman.session}-{name}:{version}"


def _busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).is_file():
            return Path(candidate)
    raise RuntimeError("busybox not found: install the Debian package busybox-static")


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_.:/,+@%=" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rootfs_tar(files: Mapping[str, bytes], symlinks: Mapping[str, str], dirs: list[str]) -> bytes:
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(path: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(path)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
            tar.addfile(info)

        for d in ["bin", "www", "tmp", "etc", "app", *dirs]:
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        tar.add(str(_busybox()), arcname="bin/busybox")
        for link, target in {"bin/sh": "busybox", **symlinks}.items():
            info = tarfile.TarInfo(link)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, now
            tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o755 if data.startswith(b"#!") else 0o644, now
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(
    podman: PodmanService,
    tag: str,
    *,
    files: Mapping[str, bytes],
    cmd: list[str],
    env: Mapping[str, str],
    labels: Mapping[str, str],
    expose: Sequence[str] = (),
    workdir: str | None = None,
    symlinks: Mapping[str, str] | None = None,
    dirs: list[str] | None = None,
    user: str | None = None,
    volumes: Sequence[str] = (),
) -> str:
    """`podman import` a busybox rootfs plus `files`; returns the image ID (`sha256:...`). `user` and
    `volumes` become USER and VOLUME (an anonymous volume per container)."""
    tar_path = podman.workdir / f"rootfs-{os.getpid()}-{time.monotonic_ns()}.tar"
    tar_path.write_bytes(_rootfs_tar(files, symlinks or {}, dirs or []))
    changes = [f"CMD {json.dumps(cmd)}"]
    changes += [f"ENV {k}={_quote(v)}" for k, v in env.items()]
    changes += [f"LABEL {k}={_quote(v)}" for k, v in labels.items()]
    changes += [f"EXPOSE {p}" for p in expose]
    if workdir:
        changes.append(f"WORKDIR {workdir}")
    if user:
        changes.append(f"USER {user}")
    changes += [f"VOLUME {v}" for v in volumes]
    args = ["import"]
    for change in changes:
        args += ["--change", change]
    try:
        podman.cli(*args, str(tar_path), tag)
    finally:
        tar_path.unlink(missing_ok=True)
    image_id = str(podman.client().images.get(tag if "/" in tag else f"localhost/{tag}").id)
    podman.track_image(image_id)
    return image_id


def build_web_image(
    podman: PodmanService,
    tag: str,
    *,
    version: str,
    healthy: bool = True,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    user: str | None = None,
    volumes: Sequence[str] = (),
) -> str:
    """A busybox httpd image: GET /version -> the version text, GET /health -> 200 `ok` (404 if unhealthy).

    Listens on WEB_PORT (env, default 8080; EXPOSEd). Image ENV has APP_VERSION=<version> plus `env`; image
    LABEL has app.version=<version> plus `labels`.
    """
    files = {"www/version": f"{version}\n".encode(), "start.sh": WEB_START.encode()}
    if healthy:
        files["www/health"] = b"ok\n"
    return build_image(
        podman,
        tag,
        files=files,
        cmd=["/bin/sh", "/start.sh"],
        env={"APP_VERSION": version, "WEB_PORT": str(WEB_PORT), **(env or {})},
        labels={"app.version": version, **(labels or {})},
        expose=[f"{WEB_PORT}/tcp"],
        user=user,
        volumes=volumes,
    )


def web_container_kwargs(
    podman: PodmanService, *, port: int, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Kwargs for `containers.create` of a web image: bridge network, WEB_PORT published on 127.0.0.1:port."""
    return {
        "ports": {f"{WEB_PORT}/tcp": ("127.0.0.1", port)},
        "labels": {**podman.labels, **(labels or {})},
    }


def container_python() -> str:
    """The interpreter the RAG container runs: this test run's venv python (same path inside)."""
    venv_python = Path(sys.prefix) / "bin" / "python3"
    return str(venv_python if venv_python.exists() else Path(sys.executable))


def _host_mounts() -> list[str]:
    """Host paths the RAG container needs read-only: /usr, real /lib*, the interpreter prefix and the venv."""
    paths = ["/usr"]
    paths += [p for p in ("/lib", "/lib64", "/lib32") if Path(p).is_dir() and not Path(p).is_symlink()]
    for prefix in {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}:
        if not (prefix == "/usr" or prefix.startswith("/usr/")):
            paths.append(prefix)
    return paths


def build_rag_image(
    podman: PodmanService,
    tag: str,
    *,
    version: str,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """An image running `python -m ragservice` from /app (the app and Python are bind mounts, see
    rag_container_kwargs). Image ENV: RAG_VERSION=<version>, RAG_MODE=good unless `env` says otherwise."""
    symlinks = {p.lstrip("/"): os.readlink(p) for p in ("/lib", "/lib64") if Path(p).is_symlink()}
    return build_image(
        podman,
        tag,
        files={"app/VERSION": f"{version}\n".encode()},
        cmd=[container_python(), "-m", "ragservice"],
        env={
            "RAG_VERSION": version,
            "RAG_MODE": "good",
            "PYTHONPATH": APP_DIR,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        },
        labels={"app.version": version, **(labels or {})},
        expose=[f"{RAG_PORT}/tcp"],
        workdir=APP_DIR,
        symlinks=symlinks,
    )


def rag_container_kwargs(
    podman: PodmanService,
    *,
    port: int,
    pg_dsn: str,
    qdrant_url: str = "",
    collection: str = "docs",
    self_traffic_rps: float = 0.0,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Kwargs for `containers.create(image_id, name=..., **kwargs)` of a RAG image.

    Host network (the service reaches 127.0.0.1:5432 and the Qdrant test server, and serves 127.0.0.1:port).
    The version and mode come from the image; pass `env={"RAG_MODE": "bad"}` to override the mode.
    """
    mounts = [Mount(p, p, type="bind", read_only=True) for p in _host_mounts()]
    mounts.append(Mount(f"{APP_DIR}/ragservice", str(RAGSERVICE_DIR), type="bind", read_only=True))
    environment = {
        "RAG_PORT": str(port),
        "RAG_HOST": "127.0.0.1",
        "RAG_PG_DSN": pg_dsn,
        "RAG_QDRANT_URL": qdrant_url,
        "RAG_QDRANT_COLLECTION": collection,
        "RAG_SELF_TRAFFIC_RPS": str(self_traffic_rps),
        **(env or {}),
    }
    return {
        "network_mode": "host",
        "mounts": mounts,
        "environment": environment,
        "labels": {**podman.labels, **(labels or {})},
    }


def start_container(podman: PodmanService, image_id: str, *, name: str | None = None, **kwargs: Any) -> Container:
    """`containers.create` + `start` (never `run`); a container whose start fails is removed."""
    container = podman.client().containers.create(image_id, name=name or podman.name(), **kwargs)
    try:
        container.start()
    except Exception:
        container.remove(force=True)
        raise
    return container


def wait_http(url: str, *, timeout: float = 20.0, status: int = 200) -> bytes:
    """Poll `url` until it answers `status`; returns the body. Raises TimeoutError with the last outcome."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body: bytes = resp.read()
                if resp.status == status:
                    return body
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            body = exc.read()
            if exc.code == status:
                return body
            last = f"HTTP {exc.code}: {body[:200]!r}"
        except (OSError, urllib.error.URLError) as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s: {last}")


class RagServiceProcess:
    """The reference RAG service as a plain subprocess (`python -m tests.ragservice`), no container.

    `env` takes the RAG_* variables (RAG_PORT is set from `port`). Stopped with SIGTERM on exit.
    """

    def __init__(self, *, port: int | None = None, env: Mapping[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAG_HOST": "127.0.0.1", **(env or {}), "RAG_PORT": str(self.port)}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def start(self, *, timeout: float = 20.0) -> RagServiceProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ragservice"],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
        try:
            wait_http(f"{self.url}/version", timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> float:
        """SIGTERM, wait (SIGKILL after `timeout`); returns the seconds it took to exit."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0.0
        started = time.monotonic()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.returncode = proc.returncode
        return time.monotonic() - started

    def __enter__(self) -> RagServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
