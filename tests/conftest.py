"""Shared fixtures. Component fixtures live in tests/support/ (each documents itself)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

pytest_plugins = ["tests.support.slack_recorder", "tests.support.qdrant", "tests.support.pg", "tests.support.podman"]


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


@pytest.fixture
def firing_payload() -> dict[str, Any]:
    """A real Alertmanager 0.25 firing notification, relabelled for the `rag` service."""
    return relabel(load_fixture("alertmanager-0.25-firing.json"), alertname="RAGGateFailRateHigh", service="rag")


@pytest.fixture
def resolved_payload() -> dict[str, Any]:
    return relabel(load_fixture("alertmanager-0.25-resolved.json"), alertname="RAGGateFailRateHigh", service="rag")


def relabel(payload: dict[str, Any], **labels: str) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    for alert in out["alerts"]:
        alert["labels"].update(labels)
    out["commonLabels"].update(labels)
    out["groupLabels"].update({k: v for k, v in labels.items() if k in out["groupLabels"]})
    return out
