"""The `rollout:` section: the canary plan by default, every mistake named by its key path."""

from __future__ import annotations

import pytest
import yaml

from rollbackd.errors import ConfigError
from rollbackd.rollout import config as rollout_config
from rollbackd.wiring import parse_settings as parse  # the rollout section is checked where it is built

ENV = {"WT": "w" * 20, "AT": "a" * 20}


def settings_with(rollout: dict | None):
    svc: dict = {"policy": {"confirm": "off"}, "plan": [{"type": "command", "argv": ["/bin/true"]}]}
    if rollout is not None:
        svc["rollout"] = rollout
    cfg = {
        "auth": {"webhook_token": "${WT}", "api_tokens": [{"name": "oncall", "token": "${AT}"}]},
        "services": {"rag": svc},
    }
    return parse(yaml.safe_dump(cfg), ENV)


def test_absent_section_is_the_1_10_50_100_plan_with_default_gates() -> None:
    cfg = rollout_config.parse(settings_with(None).services["rag"].rollout, "services.rag.rollout")
    assert [p.weight for p in cfg.phases] == [1, 10, 50, 100]
    assert [g.name for g in cfg.hard_gates(0)] == ["error_rate"]
    soft = cfg.soft_gates(3)
    assert [(g.name, g.relative_to, g.max_ratio) for g in soft] == [("latency_p95", "baseline_p95", 1.1)]


def test_a_configured_plan_with_phase_gates_and_durations() -> None:
    section = {
        "phases": [
            {"weight": 5, "window": "2m", "interval": "10s"},
            {"weight": 100, "window": "10m", "hard": [{"name": "p99", "expr": "x", "op": "<", "threshold": 2}]},
        ],
        "hard": [{"name": "success", "expr": "s", "op": ">=", "threshold": 0.99}],
        "soft": [],
        "canary": {"port": 8091},
    }
    settings = settings_with(section)
    cfg = rollout_config.parse(settings.services["rag"].rollout, "x")
    assert cfg.phases[0].window == 120 and cfg.phases[0].interval == 10 and cfg.canary.port == 8091
    assert [g.name for g in cfg.hard_gates(0)] == ["success"]  # inherited
    assert [g.name for g in cfg.hard_gates(1)] == ["p99"]  # the phase's own
    assert cfg.soft_gates(0) == []


@pytest.mark.parametrize(
    ("section", "path", "words"),
    [
        ({"phases": [{"weight": 10}, {"weight": 5}, {"weight": 100}]}, "services.rag.rollout", "must increase"),
        ({"phases": [{"weight": 10}, {"weight": 50}]}, "services.rag.rollout", "last phase must be 100"),
        (
            {"phases": [{"weight": 0}, {"weight": 100}]},
            "services.rag.rollout.phases[0].weight",
            "greater than or equal",
        ),
        (
            {"phases": [{"weight": 100, "window": "10s", "interval": "1m"}]},
            "services.rag.rollout.phases[0]",
            "interval",
        ),
        ({"phases": [{"weight": 100, "widnow": "1m"}]}, "services.rag.rollout.phases[0].widnow", "Extra inputs"),
        ({"hard": [{"name": "e", "expr": "x"}]}, "services.rag.rollout.hard[0]", "either `threshold`"),
        (
            {"hard": [{"name": "e", "expr": "x", "threshold": 1, "relative_to": "baseline_p95", "max_ratio": 1.1}]},
            "services.rag.rollout.hard[0]",
            "either `threshold`",
        ),
        (
            {"soft": [{"name": "l", "expr": "x", "relative_to": "baseline_p95"}]},
            "services.rag.rollout.soft[0]",
            "both `relative_to` and `max_ratio`",
        ),
        (
            {"soft": [{"name": "l", "expr": "x", "op": "==", "threshold": 1}]},
            "services.rag.rollout.soft[0].op",
            "Input should be",
        ),
        (
            {"hard": [{"name": "e", "expr": "x", "threshold": 1}, {"name": "e", "expr": "y", "threshold": 2}]},
            "services.rag.rollout",
            "unique",
        ),
        ({"canary": {"port": 70000}}, "services.rag.rollout.canary.port", "less than or equal"),
    ],
)
def test_mistakes_are_named_by_key_path(section: dict, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        settings_with(section)  # `check-config` and the start of the daemon
    problems = exc.value.problems
    assert any(p.startswith(path + ":") and words in p for p in problems), problems
