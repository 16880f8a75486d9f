"""A service to roll out against real Prometheus: a file-backed traffic switch, a file-backed canary and
live deployment (command backends, no shell), and an exporter whose gauges follow the weight, so a
test says "errors rise once 10 % of users are on the new release" as a function of the switch."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.prometheus import MetricsExporter

WRITE = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
APPEND = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
REMOVE = "import os, sys; os.path.exists(sys.argv[1]) and os.remove(sys.argv[1])"


@dataclass
class World:
    dir: Path

    @property
    def weight_file(self) -> Path:
        return self.dir / "weight"

    @property
    def canary_file(self) -> Path:
        return self.dir / "canary"

    @property
    def live_file(self) -> Path:
        return self.dir / "live"

    @property
    def rollback_log(self) -> Path:
        return self.dir / "rollback.log"

    def weight(self) -> int:
        return int(self.weight_file.read_text() or 0) if self.weight_file.exists() else 0

    def canary(self) -> str | None:
        return self.canary_file.read_text() if self.canary_file.exists() else None

    def live(self) -> str:
        return self.live_file.read_text()


def world(tmp: Path, live: str = "v1") -> World:
    w = World(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    w.weight_file.write_text("0")
    w.live_file.write_text(live)
    return w


def service(w: World, *, window: str = "3s", interval: str = "500ms") -> dict[str, Any]:
    py = sys.executable
    return {
        "policy": {"confirm": "off", "rollback_alerts": ["CanaryErrors"], "cooldown": "1s"},
        "releases": {"track": True, "data": "optional"},
        "deploy": {
            "type": "command",
            "argv": [py, "-c", WRITE, str(w.live_file), "{version}"],
            "current_argv": ["/bin/cat", str(w.live_file)],
            "observe": None,
            "green_check": None,
            "baseline": {"expr": "max(rag_live_p95{service=$service})", "refresh": None},
        },
        "traffic": {
            "type": "command",
            "get_argv": ["/bin/cat", str(w.weight_file)],
            "set_argv": [py, "-c", WRITE, str(w.weight_file), "{weight}"],
        },
        "plan": [
            {"type": "traffic.cut"},
            {
                "type": "command",
                "name": "rollback-code",
                "argv": [py, "-c", APPEND, str(w.rollback_log), "rolled back"],
            },
            {"type": "traffic.restore"},
        ],
        "rollout": {
            "phases": [{"weight": wt, "window": window, "interval": interval} for wt in (1, 10, 50, 100)],
            "hard": [
                {
                    "name": "error_rate",
                    "expr": "max(rag_canary_errors{service=$service,version=$version})",
                    "op": "<=",
                    "threshold": 0.05,
                }
            ],
            "soft": [
                {
                    "name": "latency_p95",
                    "expr": "max(rag_canary_p95{service=$service,version=$version})",
                    "relative_to": "baseline_p95",
                    "max_ratio": 1.1,
                }
            ],
            "canary": {
                "deploy_argv": [py, "-c", WRITE, str(w.canary_file), "{version}"],
                "remove_argv": [py, "-c", REMOVE, str(w.canary_file)],
                "timeout": "20s",
            },
        },
    }


Gauge = Callable[[World], float]


def feed(exporter: MetricsExporter, w: World, *, errors: Gauge, p95: Gauge, live_p95: float = 0.5) -> None:
    """Per scrape: the canary's error ratio and p95 (functions of the world: weight, canary) and the
    live release's p95 (what the baseline measures)."""

    def render() -> str:
        version = w.canary() or "none"
        return (
            f'rag_canary_errors{{version="{version}"}} {errors(w)}\n'
            f'rag_canary_p95{{version="{version}"}} {p95(w)}\n'
            f"rag_live_p95 {live_p95}\n"
        )

    exporter.set_render(render)
