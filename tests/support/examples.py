"""The shipped example configs made runnable in a test, changing only addresses and paths:
config/prometheus.example.yml (targets, Alertmanager, rule file paths), config/rollbackd.example.yaml
(listen, state path, Prometheus and Alertmanager URLs), and a RAG metric source that follows the
metric contract of rules/README.md (counters that grow by a fixed step per scrape)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.daemon import REPO

PROMETHEUS_EXAMPLE = REPO / "config" / "prometheus.example.yml"
ROLLBACKD_EXAMPLE = REPO / "config" / "rollbackd.example.yaml"
# Per scrape: 100 requests, 50 <= 0.1s, 90 <= 0.25s, 97 <= 0.5s, all <= 1s: P95 = 0.25 + 0.25 * 5/7 = 0.4286s.
LATENCY_BUCKETS = {"0.1": 50, "0.25": 90, "0.5": 97, "1": 100, "+Inf": 100}


def prometheus_config(
    *, rag: str, rollbackd: str, alertmanager: str, drop_service_label: bool = False, rule_glob: str | None = None
) -> dict[str, Any]:
    """The example with its rule files made absolute and its targets pointed at these addresses
    (a fault to show: without the RAG job's service label, or only the rule files of `rule_glob`)."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_EXAMPLE.read_text())
    config["rule_files"] = [str((PROMETHEUS_EXAMPLE.parent / p).resolve()) for p in config["rule_files"]]
    if rule_glob is not None:
        config["rule_files"] = [str(Path(p).parent / rule_glob) for p in config["rule_files"]]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    for job in config["scrape_configs"]:
        (group,) = job["static_configs"]
        group["targets"] = [{"rollbackd": rollbackd, "rag": rag}[job["job_name"]]]
        if drop_service_label:
            group.pop("labels", None)
    return config


def rollbackd_config(tmp: Path, *, listen: str, prometheus: str, alertmanager: str) -> Path:
    config: dict[str, Any] = yaml.safe_load(ROLLBACKD_EXAMPLE.read_text())
    config["listen"] = listen
    config["state"]["path"] = str(tmp / "rollbackd.db")
    config["prometheus"]["url"] = prometheus
    config["alertmanager"]["url"] = alertmanager
    path = tmp / "rollbackd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def rag_metrics() -> Callable[[], str]:
    """A render function for MetricsExporter: the RAG metric contract, no `service` label (the scrape
    config adds it), steady and healthy; every scrape adds 100 requests."""
    lock = threading.Lock()
    scrapes = [0]

    def render() -> str:
        with lock:
            scrapes[0] += 1
            n = scrapes[0]
        route = 'route="/query"'
        lines = [
            f'rag_http_requests_total{{{route},code="200"}} {100 * n}',
            f'rag_gate_checks_total{{gate="grounding",result="pass"}} {100 * n}',
            'rag_gate_checks_total{gate="grounding",result="fail"} 0',
            'rag_ragas_score{metric="faithfulness"} 0.95',
            "rag_ragas_window_queries 100",
        ]
        lines += [
            f'rag_http_request_duration_seconds_bucket{{{route},le="{le}"}} {count * n}'
            for le, count in LATENCY_BUCKETS.items()
        ]
        lines += [
            f"rag_http_request_duration_seconds_count{{{route}}} {100 * n}",
            f"rag_http_request_duration_seconds_sum{{{route}}} {20 * n}",
        ]
        return "\n".join(lines) + "\n"

    return render
