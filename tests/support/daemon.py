"""Run rollbackd for tests: in-process (``running_daemon``) or as a real subprocess that can be
killed with SIGKILL and restarted (``DaemonProcess``). Both serve real HTTP on 127.0.0.1.

    cfg = write_config(tmp_path, services={...})            # a valid config with test tokens
    async with running_daemon(cfg) as d:                      # in-process
        await d.post_webhook(payload)                         # -> aiohttp response status, json
    with DaemonProcess(cfg) as proc:                          # subprocess
        proc.kill9(); proc.start()
    with Replicas(replica_configs(tmp_path, 3, services={...}, dsn=dsn)) as rs:   # HA on one Postgres
        leader = rs.wait_leader(); leader.kill9(); rs.wait_leader(exclude=leader)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import free_port  # below the ephemeral range, in this worker's slice

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_TOKEN = "test-webhook-token-0123456789"
API_TOKEN = "test-api-token-0123456789abcdef"
TEST_ENV = {"ROLLBACKD_WEBHOOK_TOKEN": WEBHOOK_TOKEN, "ROLLBACKD_API_TOKEN": API_TOKEN}


def config_dict(tmp_path: Path, *, services: Mapping[str, Any], **top: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "state": {"type": "sqlite", "path": str(tmp_path / "state.db")},
        "auth": {
            "webhook_token": "${ROLLBACKD_WEBHOOK_TOKEN}",
            "api_tokens": [{"name": "tester", "token": "${ROLLBACKD_API_TOKEN}"}],
        },
        "services": dict(services),
    }
    cfg.update(top)
    return _exported(cfg)


def _exported(node: Any, parent: str = "") -> Any:
    """Credential-bearing settings are never literals in a config file: the harness exports each literal
    DSN (state, snapshot stores, checks) or paging URL a test wrote, and writes its ``${NAME}`` instead."""
    if isinstance(node, list):
        return [_exported(v, parent) for v in node]
    if not isinstance(node, dict):
        return node
    return {
        k: _literal(k, v) if k == "dsn" or (k == "url" and parent == "page_webhook") else _exported(v, k)
        for k, v in node.items()
    }


def _literal(key: str, value: Any) -> Any:
    if not isinstance(value, str) or value.startswith("${"):
        return value
    name = f"ROLLBACKD_TEST_{key.upper()}_" + hashlib.sha256(value.encode()).hexdigest()[:8].upper()
    return secret_ref(name, value)


def write_config(tmp_path: Path, *, services: Mapping[str, Any], **top: Any) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "rollbackd.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path, services=services, **top), sort_keys=False))
    return path


def secret_ref(name: str, value: str) -> str:
    """``${name}`` for a config, ``value`` exported to this process (and the daemons it starts): a
    credential-bearing setting (a DSN, a paging URL) is never a literal in the file."""
    os.environ[name] = value
    return "${" + name + "}"


def command_service(plan: list[dict[str, Any]], **policy: Any) -> dict[str, Any]:
    """A service whose plan is the given steps, confirm off and no release tracking (unless overridden)."""
    return {"policy": {"confirm": "off", **policy}, "releases": {"track": False}, "plan": plan}


def load_settings(path: Path) -> Any:
    from rollbackd.wiring import load_settings as load

    return load(path, env={**os.environ, **TEST_ENV})


class Api:
    """Blocking JSON client for tests (urllib)."""

    def __init__(self, url: str, token: str = API_TOKEN) -> None:
        self.url = url
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 30,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        tok = self.token if token is None else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read()
                return resp.status, json.loads(text) if text.strip().startswith((b"{", b"[")) else text
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text

    def webhook(self, payload: Any) -> tuple[int, Any]:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.call("POST", "/v1/webhook/alertmanager", raw=raw, token=WEBHOOK_TOKEN)

    def wait_incident(self, incident_id: str, states: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            status, body = self.call("GET", f"/v1/incidents/{incident_id}")
            if status == 200 and body["state"] in states:
                return dict(body)
            time.sleep(0.05)
        raise AssertionError(f"incident {incident_id} did not reach {states}: {body}")


class DaemonProcess:
    """`python -m rollbackd serve` as a child process; ``kill9()`` then ``start()`` is a crash + restart."""

    def __init__(self, config: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = {
            **os.environ,
            **TEST_ENV,
            **(env or {}),
            "PYTHONPATH": str(REPO / "daemon") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        settings = yaml.safe_load(config.read_text())
        self.url = f"http://{settings['listen']}"
        self.api = Api(self.url)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "daemon.log"

    def start(self, timeout: float = 20) -> None:
        with self.log.open("ab") as log:  # the child keeps its own descriptor; ours is closed at once
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rollbackd", "serve", "--config", str(self.config)],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"rollbackd exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                status, _ = self.api.call("GET", "/readyz")
                if status == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"rollbackd not ready: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the process (not its steps' process groups) stops, sockets and all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def readyz(self) -> dict[str, Any] | None:
        """The /readyz body, or None when the process does not answer (dead, stopped, cut)."""
        if not self.alive:
            return None
        try:
            status, body = self.api.call("GET", "/readyz", timeout=1)
        except OSError:  # includes the timeout of a stopped process
            return None
        return body if isinstance(body, dict) else {"status": status}

    def leads(self) -> bool:
        body = self.readyz()
        return bool(body and body.get("leader"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def replica_configs(
    tmp_path: Path, count: int, *, services: Mapping[str, Any], dsn: str, lease: str = "2s", **top: Any
) -> list[Path]:
    """``count`` configs of replicas on one Postgres journal (own port, own directory and log each)."""
    ha = {"lease": lease, "replicas": count, "poll": "0.3s", **top.pop("ha", {})}
    top.setdefault("incidents", {"kill_grace": "0.5s"})  # shorter than a third of the (short) test lease
    return [
        write_config(tmp_path / f"replica{i}", services=services, state={"type": "postgres", "dsn": dsn}, ha=ha, **top)
        for i in range(count)
    ]


class Replicas:
    """Several `rollbackd serve` processes (DaemonProcess each) on one journal."""

    def __init__(self, configs: list[Path], env: Mapping[str, str] | None = None) -> None:
        self.all = [DaemonProcess(c, env=env) for c in configs]

    def __enter__(self) -> Replicas:
        for replica in self.all:
            replica.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for replica in self.all:
            with contextlib.suppress(Exception):
                if replica.alive:
                    replica.cont()
                replica.stop()

    def leaders(self) -> list[DaemonProcess]:
        return [r for r in self.all if r.leads()]

    def wait_leader(self, *, exclude: DaemonProcess | None = None, timeout: float = 30) -> DaemonProcess:
        """The one replica that says it leads (never ``exclude``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = [r for r in self.leaders() if r is not exclude]
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.05)
        raise AssertionError(f"no single leader: {[(r.url, r.readyz()) for r in self.all]}")

    def followers(self, leader: DaemonProcess) -> list[DaemonProcess]:
        return [r for r in self.all if r is not leader]


@contextlib.asynccontextmanager
async def running_daemon(config: Path, **overrides: Any) -> AsyncIterator[Any]:
    """The daemon in this event loop; yields the Daemon (``.core``, ``.port``, ``.url``)."""
    from rollbackd.daemon import Daemon

    daemon = Daemon(load_settings(config), **overrides)
    await daemon.start()
    daemon.url = f"http://127.0.0.1:{daemon.port}"  # type: ignore[attr-defined]
    try:
        yield daemon
    finally:
        await daemon.stop()


@contextlib.contextmanager
def env(values: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
