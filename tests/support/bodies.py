"""Large but valid Alertmanager bodies, for the webhook's size tests and bench/webhook_storm --big-body.

raw = many_alerts(4000, seed="a")   # 4,000 distinct valid alerts, compact JSON as Go writes it, <= 1 MiB
"""

from __future__ import annotations

import json
from typing import Any

MIB = 1_048_576


def many_alerts(count: int, *, seed: str = "a", service: str = "rag", limit: int = MIB) -> bytes:
    """``count`` firing alerts of ``service`` (every tenth for an unknown service, every fifth resolved),
    distinct fingerprints derived from ``seed``; raises if the body would exceed ``limit`` bytes."""
    alerts = [_alert(i, seed, service) for i in range(count)]
    body: dict[str, Any] = {
        "receiver": "rollbackd",
        "status": "firing",
        "alerts": alerts,
        "groupLabels": {"alertname": "RAGGateFailRateHigh"},
        "commonLabels": {"alertname": "RAGGateFailRateHigh"},
        "commonAnnotations": {},
        "externalURL": "http://am:9093",
        "version": "4",
        "groupKey": '{}:{alertname="RAGGateFailRateHigh"}',
        "truncatedAlerts": 0,
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    if len(raw) > limit:
        raise ValueError(f"{count} alerts take {len(raw)} bytes, more than {limit}")
    return raw


def _alert(i: int, seed: str, service: str) -> dict[str, Any]:
    resolved = i % 5 == 4
    return {
        "status": "resolved" if resolved else "firing",
        "labels": {
            "alertname": "RAGGateFailRateHigh",
            "service": service if i % 10 else "other",
            "instance": f"10.{i >> 8 & 255}.{i & 255}.1",
        },
        "annotations": {},
        "startsAt": "2026-11-21T22:00:26.307Z",
        "endsAt": "2026-11-21T22:05:26.307Z" if resolved else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prom/",
        "fingerprint": f"{seed}{i:015x}"[-16:],
    }
