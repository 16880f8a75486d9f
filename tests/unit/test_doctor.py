"""The doctor's pure parts: Alertmanager's routing walk, the bearer-token verdict, the exposition
parser, the one-line rendering; and the drill-schedule gauge RollbackdDrillStale joins on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbackd.doctor import Status, fail, ok, skip, warn
from rollbackd.doctor.alertmanager import bearer
from rollbackd.doctor.daemon import _drill_finding, _snapshot_finding, parse_metrics
from rollbackd.doctor.routing import parse_matcher, receivers_for
from rollbackd.doctor.run import failed, render_json, render_text
from rollbackd.wiring import build_core
from rollbackd.wiring import parse_settings as parse

REPO = Path(__file__).resolve().parents[2]
AM_EXAMPLE = yaml.safe_load((REPO / "config" / "alertmanager.example.yml").read_text())
TOKEN = "w" * 24


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ({"alertname": "RAGGateFailRateHigh", "team": "rag", "service": "rag"}, ["rollbackd", "humans"]),
        ({"alertname": "RollbackdHeld", "team": "rollbackd", "service": "rag"}, ["rollbackd", "humans"]),
        ({"alertname": "DiskFull", "team": "other"}, ["humans"]),
        ({"alertname": "RAGGateFailRateHigh", "service": "rag"}, ["humans"]),  # no team label: not to rollbackd
    ],
)
def test_the_example_routes_as_amtool_says(labels: dict[str, str], receivers: list[str]) -> None:
    # tests/ops/test_configs.py::test_routes asks amtool the same questions.
    assert receivers_for(AM_EXAMPLE["route"], labels) == receivers


def test_first_match_wins_unless_continue_and_old_match_syntax() -> None:
    route: dict[str, Any] = {
        "receiver": "root",
        "routes": [
            {
                "receiver": "a",
                "match": {"team": "rag"},
                "routes": [{"receiver": "a1", "match_re": {"severity": "crit.*"}}],
            },
            {"receiver": "b", "matchers": ['team!="x"']},
        ],
    }
    assert receivers_for(route, {"team": "rag", "severity": "critical"}) == ["a1"]
    assert receivers_for(route, {"team": "rag", "severity": "warning"}) == ["a"]  # the parent, no child matched
    assert receivers_for(route, {"team": "ops"}) == ["b"]
    assert receivers_for(route, {"team": "x"}) == ["root"]
    assert parse_matcher('team=~"rag|rollbackd"') == ("team", "=~", "rag|rollbackd")
    assert parse_matcher("severity = critical") == ("severity", "=", "critical")


def test_bearer_verdicts(tmp_path: Path) -> None:
    good, other = tmp_path / "good", tmp_path / "other"
    good.write_text(TOKEN + "\n")
    other.write_text("x" * 24)
    assert bearer({"authorization": {"credentials_file": str(good)}}, TOKEN)[0] is Status.OK
    status, detail, fix = bearer({"authorization": {"credentials_file": str(tmp_path / "missing")}}, TOKEN)
    assert status is Status.FAIL and "does not exist" in detail and str(tmp_path / "missing") in fix
    status, detail, _ = bearer({"authorization": {"type": "Bearer", "credentials_file": str(other)}}, TOKEN)
    assert status is Status.FAIL and "another token" in detail and TOKEN not in detail
    assert bearer({"bearer_token_file": str(good)}, TOKEN)[0] is Status.OK  # the older http_config field
    assert bearer({"authorization": {"credentials": "<secret>"}}, TOKEN)[0] is Status.OK
    assert bearer({"authorization": {"type": "Basic", "credentials": "x"}}, TOKEN)[0] is Status.FAIL
    assert bearer({}, TOKEN)[0] is Status.FAIL


def test_parse_metrics_reads_labelled_samples() -> None:
    text = (
        '# HELP x y\nrollbackd_snapshot_last_success_timestamp_seconds{service="rag",store="postgres"} 1.7e+09\n'
        'rollbackd_drill_last_success_timestamp_seconds{service="a\\"b"} 0.0\nrollbackd_up 1\n'
    )
    assert parse_metrics(text) == [
        ("rollbackd_snapshot_last_success_timestamp_seconds", {"service": "rag", "store": "postgres"}, 1.7e9),
        ("rollbackd_drill_last_success_timestamp_seconds", {"service": 'a\\"b'}, 0.0),
    ]


NOW = 1_800_000_000.0


def test_snapshot_and_drill_findings() -> None:
    latest = {"id": "20261122_060701_4d", "verified": True}
    assert _snapshot_finding("rag", {"count": 0, "latest": None}, {}, NOW).status is Status.FAIL
    fresh = _snapshot_finding("rag", {"count": 2, "latest": latest}, {"postgres": NOW - 60, "qdrant": NOW - 60}, NOW)
    assert fresh.status is Status.OK and "postgres 1m ago" in fresh.detail
    stale = _snapshot_finding("rag", {"count": 2, "latest": latest}, {"postgres": NOW - 27 * 3600}, NOW)
    assert stale.status is Status.WARN and "postgres 1d03h old" in stale.detail
    unverified = _snapshot_finding(
        "rag", {"count": 1, "latest": {**latest, "verified": False}}, {"postgres": NOW - 60}, NOW
    )
    assert unverified.status is Status.WARN and "rollbackd snapshot verify 20261122_060701_4d" in unverified.fix
    assert _drill_finding("rag", {"schedule": {"cron": "0 4 * * 1"}}, 0.0, NOW).status is Status.WARN
    assert _drill_finding("rag", {"schedule": None}, NOW - 9 * 86400, NOW).status is Status.WARN
    assert _drill_finding("rag", {"schedule": None}, NOW - 86400, NOW).status is Status.OK


def test_render_one_line_per_finding_with_the_fix_and_json() -> None:
    findings = [
        ok("prometheus", "Prometheus 2.42.0 answers"),
        fail("series", "no series", "add the label", "rag"),
        warn("drill", "old", "run a drill", "rag"),
        skip("test_alert", "not sent"),
    ]
    lines = render_text(findings).splitlines()
    assert lines[0].startswith("ok    prometheus ")
    assert lines[1].startswith("FAIL  series[rag] ") and lines[1].endswith("no series  -> add the label")
    assert lines[2].endswith("old  -> run a drill") and "->" not in lines[3]
    assert lines[-1] == "1 ok, 1 warning(s), 1 failed, 1 skipped"
    body = json.loads(render_json(findings))
    assert body["ok"] is False and body["checks"][1] == {
        "check": "series",
        "subject": "rag",
        "status": "fail",
        "detail": "no series",
        "fix": "add the label",
    }
    assert failed(findings) and not failed(findings[2:])


def _drilled_service(schedule: Any, snapshots: str) -> dict[str, Any]:
    return {
        "policy": {"confirm": "off"},
        "plan": [{"type": "deploy.revert"}],
        "snapshots": {"dir": snapshots, "stores": {"postgres": {"type": "postgres", "dsn": "${RAG_DSN}"}}},
        "deploy": {"type": "docker", "containers": [{"name": "rag", "health_url": "http://127.0.0.1:8000/healthz"}]},
        "verify": {"checks": [{"type": "smoke", "requests": [{"name": "h", "url": "http://127.0.0.1:8000/healthz"}]}]},
        "drill": {} if schedule is None else {"schedule": schedule},
    }


def test_only_services_with_a_drill_schedule_export_drill_scheduled_1(tmp_path: Path) -> None:
    config = {
        "state": {"type": "sqlite", "path": str(tmp_path / "s.db")},
        "auth": {"webhook_token": "${W}", "api_tokens": [{"name": "t", "token": "${A}"}]},
        "services": {
            "weekly": _drilled_service("weekly", str(tmp_path / "weekly")),
            "by_hand": {**_drilled_service(None, str(tmp_path / "by_hand")), "drill": {"checks": ["smoke"]}},
            "plain": {"policy": {"confirm": "off"}, "plan": [{"type": "command", "argv": ["/bin/true"]}]},
        },
    }
    settings = parse(
        yaml.safe_dump(config), {"W": TOKEN, "A": "a" * 24, "RAG_DSN": "postgresql://postgres@127.0.0.1/rag"}
    )
    exposition = build_core(settings).metrics.exposition().decode()
    samples = {
        labels["service"]: value
        for name, labels, value in parse_metrics(exposition)
        if name == "rollbackd_drill_scheduled"
    }
    assert samples == {"weekly": 1.0, "by_hand": 0.0, "plain": 0.0}


def _settings(tmp_path: Path, **top: Any) -> Any:
    config = {
        "listen": "127.0.0.1:8085",
        "state": {"type": "sqlite", "path": str(tmp_path / "s.db")},
        "auth": {"webhook_token": "${W}", "api_tokens": [{"name": "t", "token": "${A}"}]},
        "services": {"rag": {"policy": {"confirm": "off"}, "plan": [{"type": "command", "argv": ["/bin/true"]}]}},
        **top,
    }
    return parse(yaml.safe_dump(config), {"W": TOKEN, "A": "a" * 24})


async def test_routing_names_the_alert_and_the_receivers_it_goes_to_instead(tmp_path: Path) -> None:
    from rollbackd.doctor.alertmanager import check_routing
    from rollbackd.doctor.context import Context

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    hook = {
        "url": "http://127.0.0.1:8085/v1/webhook/alertmanager",
        "http_config": {"authorization": {"credentials_file": str(token_file)}},
    }
    config = {
        "route": {
            "receiver": "humans",
            "routes": [{"receiver": "rollbackd", "matchers": ['alertname=~"RAGGateFailRateHigh|RAGHTTP5xxRateHigh"']}],
        },
        "receivers": [{"name": "humans"}, {"name": "rollbackd", "webhook_configs": [hook]}],
    }
    ctx = Context(settings=_settings(tmp_path), session=None)  # type: ignore[arg-type]  # no HTTP needed here
    ctx.cache["am_config"] = config
    (finding,) = await check_routing(ctx)
    assert finding.status is Status.FAIL and finding.subject == "rag"
    assert (
        "RAGLatencyP95Regression goes to receiver(s) humans, none posting to "
        "http://127.0.0.1:8085/v1/webhook/alertmanager" in finding.detail
    )
    assert "RAGGateFailRateHigh" not in finding.detail  # routed right, with the right token
    assert finding.detail.endswith("routed on alertname and service)")  # no Prometheus here: no rule labels
    config["route"]["routes"][0]["matchers"] = ['alertname=~"RAG.*"']
    (finding,) = await check_routing(ctx)
    assert finding.status is Status.OK and "4 rollback alert(s) reach" in finding.detail
    hook["send_resolved"] = False
    (finding,) = await check_routing(ctx)
    assert finding.status is Status.WARN and "send_resolved is false" in finding.detail
    hook["send_resolved"] = True
    token_file.unlink()
    (finding,) = await check_routing(ctx)
    assert finding.status is Status.FAIL and "does not exist" in finding.detail


def test_cli_doctor_refuses_an_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rollbackd.cli.main import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("services: {}\n")
    assert main(["doctor", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: invalid configuration" in err and "auth: Field required" in err
