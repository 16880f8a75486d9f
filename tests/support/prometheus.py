"""Real Prometheus and Alertmanager on loopback for tests, and a metrics exporter to feed them.

    with MetricsExporter() as rag, PrometheusServer(
        targets=[ScrapeTarget("rag", rag.address, labels={"service": "rag"})],
        rule_files=["rules/rag.rules.yml"],
    ) as prom:
        rag.set_text('rag_ragas_score{metric="faithfulness"} 0.7\\n')
        prom.wait_for('rag_ragas_score{service="rag"}')

Every server binds 127.0.0.1 on a free port, keeps its config, data and log in its own directory
(removed on stop unless the caller gave one), and is stopped (SIGTERM, then SIGKILL) when its
`with` block ends, even on failure. A missing binary fails the test (tests/support/components.py):
the Debian packages are `prometheus` and `prometheus-alertmanager`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from tests.support.ports import free_port  # below the ephemeral range, in this worker's slice

from .components import require_binary

__all__ = [
    "AlertmanagerServer",
    "MetricsExporter",
    "PrometheusError",
    "PrometheusServer",
    "ReceivedRequest",
    "ScrapeTarget",
    "WebhookReceiver",
    "free_port",
]

LOOPBACK = "127.0.0.1"
_PORT_ATTEMPTS = 3  # a port picked by free_port() can be taken before the server binds it


class PrometheusError(RuntimeError):
    """A server failed to start, or an API call answered an error."""


# --------------------------------------------------------------------------------------------- exporter


class _ExporterHandler(BaseHTTPRequestHandler):
    server: _ExporterHTTPServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != self.server.metrics_path:
            self.send_error(404)
            return
        body = self.server.owner.render().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: MetricsExporter, metrics_path: str) -> None:
        super().__init__((LOOPBACK, 0), _ExporterHandler)
        self.owner = owner
        self.metrics_path = metrics_path


class _Background:
    """A threaded HTTP server run in the background; `with` starts it and always stops it."""

    _server: ThreadingHTTPServer
    _thread: threading.Thread | None
    thread_name = "http-server"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name)
            self._thread.daemon = True
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class MetricsExporter(_Background):
    """A threaded HTTP server on 127.0.0.1 that serves a settable Prometheus text exposition.

    `set_text()` replaces what the next scrape gets; `set_render()` installs a function called
    once per scrape instead (e.g. counters that grow by a fixed step per scrape, so that a ratio
    of rates is exact whatever the timing). `scrapes` counts the scrapes served. It serves from
    construction on; `stop()` (or the end of its `with` block) shuts it down.
    """

    thread_name = "metrics-exporter"

    def __init__(self, text: str = "", *, metrics_path: str = "/metrics") -> None:
        self._lock = threading.Lock()
        self._text = text
        self._render_fn: Callable[[], str] | None = None
        self.scrapes = 0
        self._server = _ExporterHTTPServer(self, metrics_path)
        self.metrics_path = metrics_path
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None
        self.start()

    @property
    def address(self) -> str:
        """host:port, as a scrape target."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}{self.metrics_path}"

    def set_text(self, text: str) -> None:
        with self._lock:
            self._text = text
            self._render_fn = None

    def set_render(self, render: Callable[[], str] | None) -> None:
        with self._lock:
            self._render_fn = render

    def render(self) -> str:
        with self._lock:
            self.scrapes += 1
            return self._render_fn() if self._render_fn is not None else self._text


# ------------------------------------------------------------------------------------- server process


def _http_json(method: str, url: str, *, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """Status and decoded JSON body of one request (error statuses included: their bodies are JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class _Server:
    """One server binary on 127.0.0.1: start on a free port, wait for /-/ready, stop cleanly."""

    binary = ""
    package = ""

    def __init__(self, *, workdir: Path | None, startup_timeout: float, extra_args: Sequence[str]) -> None:
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.binary}-")) if workdir is None else Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "server.log"
        self.port = 0
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _args(self, binary: str, port: int) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config files into self.dir (called once before the first start attempt)."""

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> Self:
        try:
            binary = require_binary(self.binary, self.package)
            self._prepare()
            self._spawn(binary)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, binary: str) -> None:
        for attempt in range(_PORT_ATTEMPTS):
            self.port = free_port()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [binary, *self._args(binary, self.port), *self.extra_args],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                )
            try:
                self._wait_ready()
                return
            except PrometheusError:
                self._terminate()
                if "address already in use" not in self.log() or attempt == _PORT_ATTEMPTS - 1:
                    raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(
                    f"{self.binary} exited with {self._proc.returncode} while starting; log:\n{self.log()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"{self.binary} not ready after {self.startup_timeout}s; log:\n{self.log()[-4000:]}")

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def _cleanup(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 15 s) and remove its own directory. Idempotent."""
        self._terminate()
        self._cleanup()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------- prometheus


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape job with one target; `labels` become target labels (e.g. service="rag")."""

    job: str
    address: str
    metrics_path: str = "/metrics"
    labels: Mapping[str, str] = field(default_factory=dict)


class PrometheusServer(_Server):
    """A real `prometheus` on 127.0.0.1 with its own config, TSDB and log in one directory.

    Scrape and evaluation interval default to 1s; `alertmanager_url` (e.g. AlertmanagerServer.url)
    makes it send alerts there; `config` replaces the generated configuration altogether (e.g. a
    shipped example with its paths made absolute). `--web.enable-lifecycle` is on, so `reload()` works.
    """

    binary = "prometheus"
    package = "prometheus"

    def __init__(
        self,
        *,
        targets: Sequence[ScrapeTarget] = (),
        rule_files: Sequence[str | Path] = (),
        interval: str = "1s",
        evaluation_interval: str | None = None,
        alertmanager_url: str | None = None,
        config: Mapping[str, Any] | None = None,
        workdir: Path | None = None,
        startup_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir=workdir, startup_timeout=startup_timeout, extra_args=extra_args)
        self._config = None if config is None else dict(config)
        self.targets = list(targets)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.interval = interval
        self.evaluation_interval = evaluation_interval or interval
        self.alertmanager_url = alertmanager_url
        self.config_path = self.dir / "prometheus.yml"

    def config(self) -> dict[str, Any]:
        """The configuration this server runs with (written to config_path on start): the `config`
        given to the constructor as is, else one built from targets, rule files, intervals and
        alertmanager_url. Relative paths in a given config resolve against `self.dir`."""
        if self._config is not None:
            return self._config
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.evaluation_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": t.job,
                    "metrics_path": t.metrics_path,
                    "static_configs": [{"targets": [t.address], "labels": dict(t.labels)}],
                }
                for t in self.targets
            ],
        }
        if self.alertmanager_url is not None:
            parsed = urllib.parse.urlsplit(self.alertmanager_url)
            config["alerting"] = {
                "alertmanagers": [
                    {
                        "scheme": parsed.scheme or "http",
                        "path_prefix": parsed.path or "/",
                        "static_configs": [{"targets": [parsed.netloc]}],
                    }
                ]
            }
        return config

    def _prepare(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def _args(self, binary: str, port: int) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            f"--web.external-url=http://{LOOPBACK}:{port}",
            "--web.enable-lifecycle",
        ]

    def api(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET /api/v1/<path>: the decoded JSON envelope, `status` "success" or "error"."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = _http_json("GET", f"{self.url}/api/v1/{path}{query}")
        if not isinstance(body, dict):
            raise PrometheusError(f"GET /api/v1/{path} answered {status} without JSON: {body!r}")
        return body

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result list (vector or matrix), or PrometheusError naming the error."""
        params = {"query": expr} if at is None else {"query": expr, "time": repr(at)}
        body = self.api("query", params)
        if body.get("status") != "success":
            raise PrometheusError(f"query {expr!r}: {body.get('errorType')}: {body.get('error')}")
        result = body["data"]["result"]
        if body["data"]["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        return list(result)

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 60.0,
    ) -> list[dict[str, Any]]:
        """Query `expr` until predicate(result) holds (default: non-empty); the result, or TimeoutError."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr!r} did not satisfy the condition in {timeout}s; last: {result}")
            time.sleep(0.2)

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) from /api/v1/alerts."""
        return list(self.api("alerts")["data"]["alerts"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["data"]["groups"])

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["data"]["activeTargets"])

    def reload(self) -> None:
        """Rewrite the config from the current attributes and reload it (POST /-/reload)."""
        self._prepare()
        status, body = _http_json("POST", f"{self.url}/-/reload")
        if status != 200:
            raise PrometheusError(f"reload answered {status}: {body!r}")


# -------------------------------------------------------------------------------------- alertmanager


class AlertmanagerServer(_Server):
    """A real Alertmanager (`prometheus-alertmanager`) on 127.0.0.1, clustering off, own storage."""

    binary = "prometheus-alertmanager"
    package = "prometheus-alertmanager"

    def __init__(
        self,
        config_text: str,
        *,
        workdir: Path | None = None,
        startup_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir=workdir, startup_timeout=startup_timeout, extra_args=extra_args)
        self.config_text = config_text
        self.config_path = self.dir / "alertmanager.yml"

    def _prepare(self) -> None:
        self.config_path.write_text(self.config_text)

    def _args(self, binary: str, port: int) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            f"--web.external-url=http://{LOOPBACK}:{port}",
            "--cluster.listen-address=",
        ]

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts (filters as query parameters, e.g. active="true")."""
        query = f"?{urllib.parse.urlencode(filters)}" if filters else ""
        status, body = _http_json("GET", f"{self.url}/api/v2/alerts{query}")
        if status != 200 or not isinstance(body, list):
            raise PrometheusError(f"GET /api/v2/alerts answered {status}: {body!r}")
        return body

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST /api/v2/alerts, as Prometheus does (labels, annotations, startsAt, ...)."""
        status, body = _http_json("POST", f"{self.url}/api/v2/alerts", body=list(alerts))
        if status != 200:
            raise PrometheusError(f"POST /api/v2/alerts answered {status}: {body!r}")

    def wait_for_alerts(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 60.0,
    ) -> list[dict[str, Any]]:
        """Poll /api/v2/alerts until predicate(alerts) holds; the alerts, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            alerts = self.alerts()
            if predicate(alerts):
                return alerts
            if time.monotonic() > deadline:
                raise TimeoutError(f"Alertmanager alerts did not satisfy the condition in {timeout}s: {alerts}")
            time.sleep(0.2)


# ---------------------------------------------------------------------------------- webhook receiver


@dataclass(frozen=True)
class ReceivedRequest:
    """One request a WebhookReceiver got: method, path, headers in arrival order, raw body."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header called `name` (case-insensitive), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _ReceiverHTTPServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.owner.record(ReceivedRequest("POST", self.path, tuple(self.headers.items()), body))
        payload = b"{}"
        self.send_response(self.server.owner.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _ReceiverHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: WebhookReceiver) -> None:
        super().__init__((LOOPBACK, 0), _ReceiverHandler)
        self.owner = owner


class WebhookReceiver(_Background):
    """Records every POST it gets on 127.0.0.1 (an Alertmanager webhook receiver) and answers `status`.

    It serves from construction on; `stop()` (or the end of its `with` block) shuts it down.
    """

    thread_name = "webhook-receiver"

    def __init__(self, *, status: int = 200) -> None:
        self.status = status
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._server = _ReceiverHTTPServer(self)
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for(
        self, predicate: Callable[[list[ReceivedRequest]], bool], timeout: float = 60.0
    ) -> list[ReceivedRequest]:
        """Wait until predicate(requests so far) holds; the requests, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            requests = self.requests
            if predicate(requests):
                return requests
            if time.monotonic() > deadline:
                bodies = [r.body[:500] for r in requests]
                raise TimeoutError(f"webhook requests did not satisfy the condition in {timeout}s: {bodies}")
            time.sleep(0.1)
