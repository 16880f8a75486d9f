"""Config errors name the key path and what is wrong; secrets only from ${ENV} or *_file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rollbackd.errors import ConfigError
from rollbackd.wiring import load_settings as load
from rollbackd.wiring import parse_settings as parse

ENV = {"WT": "w" * 20, "AT": "a" * 20}
REPO = Path(__file__).resolve().parents[2]


def base() -> dict:
    return {
        "auth": {"webhook_token": "${WT}", "api_tokens": [{"name": "oncall", "token": "${AT}"}]},
        "services": {"rag": {"policy": {"confirm": "off"}, "plan": [{"type": "command", "argv": ["/bin/true"]}]}},
    }


def problems(cfg: dict, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(yaml.safe_dump(cfg), env if env is not None else ENV)
    return exc.value.problems


def test_valid_config_loads_with_defaults() -> None:
    settings = parse(yaml.safe_dump(base()), ENV)
    svc = settings.services["rag"]
    assert svc.policy.cooldown == 1800 and svc.policy.budget.max == 2 and svc.policy.budget.window == 6 * 3600
    assert settings.auth.webhook_token.get_secret_value() == "w" * 20
    assert "w" * 20 not in repr(settings)


def test_unknown_key_is_an_error_with_its_path() -> None:
    cfg = base()
    cfg["services"]["rag"]["policy"]["coldown"] = "5m"
    assert any(p.startswith("services.rag.policy.coldown:") for p in problems(cfg))


def test_bad_duration_names_the_key() -> None:
    cfg = base()
    cfg["services"]["rag"]["policy"]["cooldown"] = "5 minutes"
    (problem,) = problems(cfg)
    assert problem.startswith("services.rag.policy.cooldown:") and "duration" in problem


def test_unknown_step_type_lists_known_types() -> None:
    cfg = base()
    cfg["services"]["rag"]["plan"].append({"type": "comand", "argv": ["x"]})
    (problem,) = problems(cfg)
    assert problem.startswith("services.rag.plan[1].type: unknown type 'comand'; known: ") and "command" in problem


def test_step_options_are_validated() -> None:
    cfg = base()
    cfg["services"]["rag"]["plan"] = [{"type": "command", "argv": []}, {"type": "http", "url": "http://x", "bogus": 1}]
    found = problems(cfg)
    assert any(p.startswith("services.rag.plan[0].argv:") for p in found)
    assert any(p.startswith("services.rag.plan[1].bogus:") for p in found)


def test_literal_secret_is_refused() -> None:
    cfg = base()
    cfg["auth"]["webhook_token"] = "literal-token-in-the-file"
    found = problems(cfg)
    assert any(p.startswith("auth.webhook_token:") and "${ENV_VAR}" in p for p in found)
    assert not any("literal-token-in-the-file" in p for p in found)


def test_missing_env_var_is_named() -> None:
    found = problems(base(), env={"AT": "a" * 20})
    assert found == ["auth.webhook_token: environment variable WT is not set"]


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "webhook-token"
    secret.write_text("f" * 24 + "\n")
    cfg = base()
    del cfg["auth"]["webhook_token"]
    cfg["auth"]["webhook_token_file"] = str(secret)
    assert parse(yaml.safe_dump(cfg), ENV).auth.webhook_token.get_secret_value() == "f" * 24
    cfg["auth"]["webhook_token_file"] = str(tmp_path / "missing")
    assert problems(cfg)[0].startswith("auth.webhook_token_file: cannot read")


def test_defaults_policy_merged_under_each_service() -> None:
    cfg = base()
    cfg["defaults"] = {"policy": {"cooldown": "10m", "budget": {"max": 5}}}
    cfg["services"]["rag"]["policy"]["budget"] = {"window": "1h"}
    pol = parse(yaml.safe_dump(cfg), ENV).services["rag"].policy
    assert (pol.cooldown, pol.budget.max, pol.budget.window, pol.confirm) == (600, 5, 3600, "off")


def test_confirm_required_needs_prometheus() -> None:
    cfg = base()
    cfg["services"]["rag"]["policy"]["confirm"] = "required"
    assert problems(cfg)[0].startswith("services.rag.policy.confirm:")


def test_duplicate_step_names_refused() -> None:
    cfg = base()
    cfg["services"]["rag"]["plan"] = [{"type": "command", "argv": ["/bin/true"]}] * 2
    assert "unique" in problems(cfg)[0]


def test_every_problem_is_reported_at_once() -> None:
    cfg = base()
    cfg["listen"] = "nowhere"
    cfg["services"]["rag"]["policy"]["cooldown"] = "x"
    cfg["mode"] = "yolo"
    assert len(problems(cfg)) == 3


def test_example_config_is_valid() -> None:
    settings = load(
        REPO / "config" / "rollbackd.example.yaml",
        env={"ROLLBACKD_WEBHOOK_TOKEN": "w" * 20, "ROLLBACKD_API_TOKEN": "a" * 20},
    )
    assert "rag" in settings.services


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(base()))
    bad = tmp_path / "bad.yaml"
    cfg = base()
    cfg["services"]["rag"]["plan"][0]["type"] = "nope"
    bad.write_text(yaml.safe_dump(cfg))
    env = {"WT": "w" * 20, "AT": "a" * 20, "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(
        [sys.executable, "-m", "rollbackd", "check-config", str(good)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok (1 service(s): rag)" in ok.stdout
    ko = subprocess.run(
        [sys.executable, "-m", "rollbackd", "check-config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ko.returncode == 1
    assert "services.rag.plan[0].type: unknown type 'nope'" in ko.stderr


def test_full_example_config_is_valid(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "webhook-token").write_text("w" * 24)
    (creds / "api-token").write_text("a" * 24)
    env = {
        "CREDENTIALS_DIRECTORY": str(creds),
        "ROLLBACKD_STATE_DSN": "postgresql://rollbackd@127.0.0.1/rollbackd",
        "ROLLBACKD_PIPELINE_TOKEN": "p" * 24,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "RAG_PG_DSN": "postgresql://rag@db/rag",
        "QDRANT_API_KEY": "k",
        "ROLLBACKD_PAGE_URL": "https://oncall.example.internal/hooks/rollbackd",
        "ROLLBACKD_PAGE_TOKEN": "page-token-1234",
    }
    settings = load(REPO / "config" / "rollbackd.full.example.yaml", env=env)
    assert [t.name for t in settings.auth.api_tokens] == ["oncall", "pipeline"]
    assert settings.services["rag"].snapshots is not None and settings.services["rag"].deploy is not None


def test_config_is_data_backends_are_checked_where_they_are_built() -> None:
    """config.parse checks the shape only and imports no backend nor the wiring; the wiring checks the rest."""
    cfg = base()
    cfg["services"]["rag"]["plan"] = [{"type": "no_such_step"}]
    cfg["state"] = {"type": "no_such_store"}
    code = (
        "import sys, yaml\n"
        "from rollbackd.config import parse\n"
        f"s = parse(yaml.safe_dump({cfg!r}), {ENV!r})\n"
        "assert s.state.type == 'no_such_store', s.state\n"
        "leaked = sorted(m for m in sys.modules if m.startswith('rollbackd.') and m.split('.')[1] in "
        "('wiring', 'plan', 'state', 'notify', 'deploy', 'snapshots', 'incidents'))\n"
        "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    found = problems(cfg)
    assert any(p.startswith("state.type: unknown type 'no_such_store'") for p in found), found
    assert any(p.startswith("services.rag.plan[0].type") for p in found), found


def test_build_core_refuses_settings_whose_backends_are_invalid() -> None:
    from rollbackd.config import parse as parse_shape
    from rollbackd.wiring import build_core

    cfg = base()
    cfg["state"] = {"type": "no_such_store"}
    with pytest.raises(ConfigError) as exc:
        build_core(parse_shape(yaml.safe_dump(cfg), ENV))
    assert exc.value.problems[0].startswith("state.type"), exc.value.problems
