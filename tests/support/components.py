"""Finding the real components that integration tests run.

In this project a missing component is a failure, never a skip: a skipped integration test hides a
missing install step. `scripts/test` installs every component; the failure message says which
Debian package provides the missing one.
"""

from __future__ import annotations

import shutil

import pytest


def require_binary(name: str, package: str) -> str:
    """Return the absolute path of executable `name`, or fail the test naming its Debian package."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found on PATH: install the Debian package {package!r} "
            f"(apt-get install --no-install-recommends {package}); scripts/test installs it",
            pytrace=False,
        )
    return path
