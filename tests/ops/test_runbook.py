"""The 3 AM runbook: a section per alert that its runbook_url finds, and the commands it needs."""

from __future__ import annotations

import re

import pytest

from tests.ops.common import (
    AUTO_ROLLBACK_ALERTS,
    RAG_ALERTS,
    ROLLBACKD_ALERTS,
    ROOT,
    RUNBOOK,
    RUNBOOK_URL,
    all_alerts,
    github_anchor,
    markdown_headings,
)


def _anchors() -> set[str]:
    return {github_anchor(h) for h in markdown_headings(RUNBOOK.read_text())}


def _section(name: str) -> str:
    """The text of the runbook section headed `name`, up to the next heading."""
    text = RUNBOOK.read_text()
    match = re.search(rf"^#+ {re.escape(name)}\n(.*?)(?=^#)", text + "\n#", re.S | re.M)
    assert match, f"no section {name!r}"
    return match.group(1)


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("RAGGateFailRateHigh", "raggatefailratehigh"),
        ("First 5 minutes", "first-5-minutes"),
        ("When to pause, and when not", "when-to-pause-and-when-not"),
        ("rollbackd's own alerts", "rollbackds-own-alerts"),
        ("Roll-forward", "roll-forward"),
    ],
)
def test_github_anchor(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor


@pytest.mark.parametrize("name", sorted(all_alerts()))
def test_runbook_url_anchor_matches_a_heading(name: str) -> None:
    url = all_alerts()[name]["annotations"]["runbook_url"]
    base, _, anchor = url.partition("#")
    assert base == RUNBOOK_URL
    assert anchor in _anchors(), f"{name}: #{anchor} is not a heading of {RUNBOOK.name}"


def test_one_section_per_alert() -> None:
    headings = markdown_headings(RUNBOOK.read_text())
    for name in (*RAG_ALERTS, *ROLLBACKD_ALERTS):
        assert headings.count(name) == 1, name


@pytest.mark.parametrize("name", RAG_ALERTS)
def test_each_rag_section_says_what_rollbackd_does(name: str) -> None:
    section = _section(name)
    for part in ("**Means:**", "**rollbackd:**", "**Check:**", "**Act:**"):
        assert part in section, f"{name}: {part} missing"
    does = section.split("**rollbackd:**", 1)[1].split("**Check:**", 1)[0]
    if name in AUTO_ROLLBACK_ALERTS:
        assert "rolls back automatically" in does, name
    else:
        assert "notifies only" in does, name


def test_first_five_minutes_comes_first() -> None:
    second_level = re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)
    assert second_level[0] == "First 5 minutes"


def test_runbook_has_the_commands() -> None:
    text = RUNBOOK.read_text()
    for command in (
        "rollbackd status",
        "rollbackd show <incident-id>",
        "rollbackd history",
        'rollbackd trigger --service rag --reason "',
        "--dry-run",
        "rollbackd rollforward <incident-id>",
        "rollbackd pause --for 2h --reason",
        "rollbackd resume",
    ):
        assert command in text, command
    assert "### When to pause" in text


def test_internal_links_resolve() -> None:
    text = RUNBOOK.read_text()
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in _anchors(), anchor


def test_templates() -> None:
    incident = (ROOT / "runbooks" / "templates" / "incident.md").read_text()
    postmortem = (ROOT / "runbooks" / "templates" / "postmortem.md").read_text()
    assert "rollbackd show <incident-id>" in incident
    assert "rollbackd release list --markdown" in postmortem
    assert "rollbackd show <incident-id>" in postmortem
    for heading in ("Timeline", "Root cause", "Actions"):
        assert heading in markdown_headings(postmortem)
