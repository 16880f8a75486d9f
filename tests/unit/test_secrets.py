"""Credential-bearing settings are secrets: refused as literals, masked wherever text leaves the daemon
(errors, the journal, Slack, logs, check-config)."""

from __future__ import annotations

import copy
import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbackd import logs, redact
from rollbackd.errors import BackendError, ConfigError, RetryableError
from rollbackd.wiring import parse_settings as parse
from tests.unit.test_config import ENV, REPO, base, problems

DSN = "postgresql://rag:pg-pass-9876@db:5432/rag"


def with_service(**extra: Any) -> dict[str, Any]:
    cfg = base()
    cfg["services"]["rag"].update(extra)
    return cfg


LITERALS = [
    ("state.dsn", {"state": {"type": "postgres", "dsn": DSN}}),
    (
        "services.rag.snapshots.stores.postgres.dsn",
        {
            "services": {
                "rag": {"snapshots": {"dir": "/tmp/x", "stores": {"postgres": {"type": "postgres", "dsn": DSN}}}}
            }
        },
    ),
    (
        "services.rag.verify.checks[0].stores.pg.dsn",
        {"services": {"rag": {"verify": {"checks": [{"type": "counts", "stores": {"pg": {"dsn": DSN}}}]}}}},
    ),
    (
        "services.rag.verify.checks[0].corpus.dsn",
        {
            "services": {
                "rag": {"verify": {"checks": [{"type": "governance", "sources_file": "/x", "corpus": {"dsn": DSN}}]}}
            }
        },
    ),
    ("services.rag.page_webhook.url", {"services": {"rag": {"page_webhook": {"url": "https://pager/hook?key=k"}}}}),
    (
        "services.rag.page_webhook.headers.Authorization",
        {"services": {"rag": {"page_webhook": {"url": "${WT}", "headers": {"Authorization": "Bearer abc"}}}}},
    ),
    (
        "services.rag.plan[0].headers.X-Api-Key",
        {"services": {"rag": {"plan": [{"type": "http", "url": "http://lb/x", "headers": {"X-Api-Key": "k123"}}]}}},
    ),
    ("prometheus.url", {"prometheus": {"url": "http://prom:literal-pw@prom:9090"}}),
    ("prometheus.bearer_token", {"prometheus": {"url": "http://prom:9090", "bearer_token": "tok-literal"}}),
]


def merged(over: dict[str, Any]) -> dict[str, Any]:
    cfg = base()
    for key, value in over.items():
        if key == "services":
            cfg["services"]["rag"] = {**cfg["services"]["rag"], **value["rag"]}
        else:
            cfg[key] = value
    return copy.deepcopy(cfg)


@pytest.mark.parametrize(("path", "over"), LITERALS, ids=[p for p, _ in LITERALS])
def test_credential_bearing_literals_are_refused(path: str, over: dict[str, Any]) -> None:
    found = problems(merged(over))
    assert any(p.startswith(f"{path}: a ") and "${ENV_VAR}" in p for p in found), found
    assert not any("pg-pass-9876" in p or "literal-pw" in p or "abc" in p.split(": ", 1)[1] for p in found)


def test_the_same_settings_from_the_environment_load_and_are_masked() -> None:
    env = {
        **ENV,
        "STATE_DSN": "postgresql://rb:state-pass-1@127.0.0.1/rb",
        "PAGE_URL": "https://pager/h?key=pk-1234",
        "PAGE_TOKEN": "page-tok-5678",
        "PROM_PW": "prom-pw-4321",
    }
    cfg = merged(
        {
            "state": {"type": "postgres", "dsn": "${STATE_DSN}"},
            "prometheus": {"url": "http://prom:${PROM_PW}@prom:9090"},
            "services": {
                "rag": {"page_webhook": {"url": "${PAGE_URL}", "headers": {"Authorization": "Bearer ${PAGE_TOKEN}"}}}
            },
        }
    )
    settings = parse(yaml.safe_dump(cfg), env)
    hook = settings.services["rag"].page_webhook
    assert hook is not None and hook.headers["Authorization"].get_secret_value() == "Bearer page-tok-5678"
    assert "page-tok-5678" not in repr(settings) and "pk-1234" not in repr(settings)
    text = f"connect {env['STATE_DSN']} then POST {env['PAGE_URL']} with page-tok-5678 via http://prom:prom-pw-4321@x"
    masked = redact.text(text)
    for secret in ("state-pass-1", "pk-1234", "page-tok-5678", "prom-pw-4321"):
        assert secret not in masked, masked


def test_url_file_for_the_paging_url(tmp_path: Path) -> None:
    (tmp_path / "page").write_text("https://pager/h?key=from-file-1\n")
    cfg = merged({"services": {"rag": {"page_webhook": {"url_file": str(tmp_path / "page")}}}})
    settings = parse(yaml.safe_dump(cfg), ENV)
    hook = settings.services["rag"].page_webhook
    assert hook is not None and hook.url.get_secret_value() == "https://pager/h?key=from-file-1"


REDACTIONS = [
    ("https://user:pw@h/x", "https://***@h/x"),
    ("GET http://h/a?token=t1&x=1&api_key=k2#f", "GET http://h/a?token=***&x=1&api_key=***#f"),
    ("headers: {'Authorization': 'Bearer abcdefgh1234'}", "headers: {'Authorization': '***'}"),
    ('{"X-Api-Key": "zzz"}', '{"X-Api-Key": "***"}'),
    ("sent Bearer abcdefgh12345678 to h", "sent Bearer *** to h"),
    ("nothing secret here", "nothing secret here"),
]


@pytest.mark.parametrize(("raw", "expected"), REDACTIONS, ids=[r for r, _ in REDACTIONS])
def test_redaction_patterns(raw: str, expected: str) -> None:
    assert redact.text(raw) == expected


def test_known_secrets_are_masked_and_text_is_cut() -> None:
    redact.register("registered-secret-42")
    assert redact.text("a registered-secret-42 b") == "a *** b"
    assert len(redact.text("x" * 10_000, limit=300)) == 300
    assert redact.data({"stdout": "registered-secret-42", "n": 1, "l": ["registered-secret-42"]}) == {
        "stdout": "***",
        "n": 1,
        "l": ["***"],
    }


def test_errors_are_redacted_where_they_are_made() -> None:
    redact.register("error-secret-77")
    err = BackendError("deploy http", "POST https://u:p@cd/x?token=abc answered 500: error-secret-77 " + "y" * 5000)
    text = str(err)
    assert "error-secret-77" not in text and "u:p@" not in text and "token=abc" not in text
    assert len(text) <= RetryableError.text_limit
    assert len(str(ConfigError("", "z" * 5000))) == 5000  # every config problem is shown whole


def test_log_lines_mask_secrets_by_value() -> None:
    redact.register("log-secret-55")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test_secrets")
    logger.addHandler(handler)
    try:
        logger.warning("step_failed", extra={"error": "GET http://h/?key=log-secret-55", "url": "http://a:b@h/"})
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert "log-secret-55" not in stream.getvalue() and line["url"] == "http://***@h/"


def test_check_config_masks_a_secret_a_problem_quotes(tmp_path: Path) -> None:
    cfg = base()
    cfg["listen"] = "${AT}"  # a problem that quotes the value it read
    path = tmp_path / "rollbackd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "rollbackd", "check-config", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "daemon"), **ENV},
    )
    assert out.returncode != 0 and "listen" in out.stderr
    assert ENV["AT"] not in out.stdout + out.stderr
