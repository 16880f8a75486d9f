"""The house rules, checked by the suite itself: ruff clean, mypy --strict clean, modules small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "daemon" / "rollbackd"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_clean() -> None:
    out = run("ruff", "check", "--quiet", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_clean() -> None:
    out = run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 420}
    assert big == {}, f"modules over ~400 lines: {big}"
