"""What the MTTR benchmark watches while the story runs, each in its own thread:

- `Poller`: a user polling the service (GET /healthz every `interval`) from fault injection to the end; every
  answer is kept (start, end, ok, version), so downtime is what a client saw, next to what rollbackd journaled.
- `AlertWatch`: Prometheus's /api/v1/alerts and Alertmanager's /api/v2/alerts every 0.25 s: when each alert
  was first seen pending, firing and in Alertmanager, with the timestamps the servers themselves give
  (Prometheus activeAt = the rule went pending; Alertmanager startsAt = Prometheus's FiredAt).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.support.prometheus import AlertmanagerServer, PrometheusServer


def parse_ts(value: str | float | None) -> float | None:
    """A unix time from an ISO 8601 string (Z or offset, any fraction) or a number; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.replace("Z", "+00:00")
    if "." in text:  # Go prints up to nanoseconds; fromisoformat takes at most microseconds
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True, slots=True)
class Probe:
    start: float
    end: float
    ok: bool
    detail: str  # HTTP status or error class
    version: str | None


@dataclass(frozen=True, slots=True)
class Outage:
    start: float  # the first failed probe was sent
    end: float  # the next successful probe was sent
    failed: int
    details: tuple[str, ...]

    @property
    def duration(self) -> float:
        return self.end - self.start


class Poller:
    def __init__(self, url: str, interval: float, timeout: float = 1.0) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.probes: list[Probe] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _once(self) -> Probe:
        started = time.time()
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
                body: Any = json.loads(resp.read() or b"{}")
                return Probe(started, time.time(), resp.status == 200, str(resp.status), body.get("version"))
        except urllib.error.HTTPError as exc:
            return Probe(started, time.time(), False, f"HTTP {exc.code}", None)
        except (OSError, ValueError) as exc:
            return Probe(started, time.time(), False, type(exc).__name__, None)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.probes.append(self._once())
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()

    def outages(self) -> list[Outage]:
        """Runs of failed probes, each from the first failed probe's start to the next good probe's start."""
        out: list[Outage] = []
        run: list[Probe] = []
        for probe in self.probes:
            if not probe.ok:
                run.append(probe)
                continue
            if run:
                out.append(Outage(run[0].start, probe.start, len(run), tuple(sorted({p.detail for p in run}))))
                run = []
        if run:
            out.append(Outage(run[0].start, run[-1].end, len(run), tuple(sorted({p.detail for p in run}))))
        return out

    def version_changes(self) -> list[tuple[float, str]]:
        """(time of the first probe that saw it, version) each time the answering version changed."""
        out: list[tuple[float, str]] = []
        for probe in self.probes:
            if probe.version and (not out or out[-1][1] != probe.version):
                out.append((probe.start, probe.version))
        return out

    def slowest(self) -> Probe | None:
        good = [p for p in self.probes if p.ok]
        return max(good, key=lambda p: p.end - p.start) if good else None


@dataclass(slots=True)
class AlertSeen:
    name: str
    active_at: float | None = None  # Prometheus: the rule went pending
    pending_seen: float | None = None
    firing_seen: float | None = None
    am_starts_at: float | None = None  # Alertmanager startsAt = Prometheus FiredAt
    am_seen: float | None = None
    am_updated_at: float | None = None


@dataclass(slots=True)
class AlertWatch:
    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer
    service: str = "rag"
    interval: float = 0.25
    seen: dict[str, AlertSeen] = field(default_factory=dict)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> AlertWatch:
        self._thread = threading.Thread(target=self._run, name="alert-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _entry(self, labels: dict[str, str]) -> AlertSeen | None:
        if labels.get("service") != self.service or "alertname" not in labels:
            return None
        name = labels["alertname"]
        return self.seen.setdefault(name, AlertSeen(name))

    def _poll_prometheus(self, now: float) -> None:
        for alert in self.prometheus.alerts():
            entry = self._entry(alert.get("labels", {}))
            if entry is None:
                continue
            if entry.active_at is None:
                entry.active_at = parse_ts(alert.get("activeAt"))
            if entry.pending_seen is None:
                entry.pending_seen = now
            if alert.get("state") == "firing" and entry.firing_seen is None:
                entry.firing_seen = now

    def _poll_alertmanager(self, now: float) -> None:
        for alert in self.alertmanager.alerts():
            entry = self._entry(alert.get("labels", {}))
            if entry is None or entry.am_seen is not None:
                continue
            entry.am_seen = now
            entry.am_starts_at = parse_ts(alert.get("startsAt"))
            entry.am_updated_at = parse_ts(alert.get("updatedAt"))

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            try:
                self._poll_prometheus(now)
                self._poll_alertmanager(now)
            except Exception:  # a slow answer on a busy machine: the next poll catches up
                self.errors += 1
            self._stop.wait(self.interval)
