"""Fixtures of the operations-artefact tests: the real tools, found or failed (never skipped)."""

from __future__ import annotations

import pytest

from tests.support.components import require_binary


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_binary("amtool", "prometheus-alertmanager")


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    return require_binary("systemd-analyze", "systemd")
