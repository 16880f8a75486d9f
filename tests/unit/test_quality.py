"""The house rules, checked by the suite itself: ruff clean, mypy --strict clean, modules small."""

from __future__ import annotations

import ast
import re
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


def test_ruff_format_clean() -> None:
    out = run("ruff", "format", "--check", "--quiet", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_clean() -> None:
    out = run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 420}
    assert big == {}, f"modules over ~400 lines: {big}"


def _calls(name: str) -> list[tuple[str, ast.Call]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name:
                found.append((str(path.relative_to(REPO)), node))
    return found


def test_every_journal_event_kind_is_an_event_kind() -> None:
    """One vocabulary for event kinds (rollbackd.reasons.EventKind): no string literal in an Event(...)."""
    literal = [
        f"{where}:{call.lineno}"
        for where, call in _calls("Event")
        for kw in call.keywords
        if kw.arg == "kind" and isinstance(kw.value, ast.Constant)
    ]
    assert literal == [], literal


def test_steps_share_facts_and_capabilities_only_through_typed_accessors() -> None:
    """No string-keyed reads of an incident's context (rollbackd.facts) nor of a service's capabilities
    (ServiceRuntime.caps): ``resources`` is only the deprecated view in rollbackd.plan."""
    keyed = re.compile(r"""\.(context|resources)(\.get\(|\[)["']""")
    found = [
        f"{p.relative_to(REPO)}:{n}"
        for p in PACKAGE.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if keyed.search(line)
    ]
    assert found == [], found
