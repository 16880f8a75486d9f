"""config/alertmanager.example.yml and config/prometheus.example.yml: valid, and doing what they say,
checked offline (amtool, promtool) and against a real Alertmanager and Prometheus on loopback."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.ops.common import CONFIG_DIR, RAG_ALERTS, ROLLBACKD_ALERTS, ROOT, all_alerts, load_yaml, poll, run
from tests.support.alertmanager import example_config
from tests.support.prometheus import AlertmanagerServer, PrometheusServer, ReceivedRequest, WebhookReceiver

AM_CONFIG = CONFIG_DIR / "alertmanager.example.yml"
PROM_CONFIG = CONFIG_DIR / "prometheus.example.yml"
WEBHOOK = "http://127.0.0.1:8085/v1/webhook/alertmanager"


# ------------------------------------------------------------------------------ alertmanager, offline


def test_amtool_check_config(amtool: str) -> None:
    result = run([amtool, "check-config", str(AM_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["team=rag", "alertname=RAGGateFailRateHigh", "service=rag"], "rollbackd,humans"),
        (["team=rollbackd", "alertname=RollbackdHeld", "service=rag"], "rollbackd,humans"),
        (["team=other", "alertname=DiskFull"], "humans"),
    ],
)
def test_routes(amtool: str, labels: list[str], receivers: str) -> None:
    result = run([amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receivers


def test_webhook_receiver_and_timings() -> None:
    config = load_yaml(AM_CONFIG)
    route = config["route"]
    assert route["group_by"] == ["alertname", "service"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("10s", "1m", "4h")
    (rollbackd,) = [r for r in config["receivers"] if r["name"] == "rollbackd"]
    (webhook,) = rollbackd["webhook_configs"]
    assert webhook["url"] == WEBHOOK
    assert webhook["send_resolved"] is True
    auth = webhook["http_config"]["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    # Relative to the config file (Alertmanager resolves it so): the file scripts/serve writes.
    assert (AM_CONFIG.parent / auth["credentials_file"]).resolve() == ROOT / "var" / "webhook-token"
    assert "credentials" not in auth  # never a token in the config file itself


def test_the_shipped_configs_agree() -> None:
    """rollbackd's listen address is where Prometheus scrapes it and Alertmanager posts; the token
    file Alertmanager reads is the one scripts/serve writes; rollbackd's URLs are the defaults."""
    daemon = load_yaml(CONFIG_DIR / "rollbackd.example.yaml")
    prom, am = load_yaml(PROM_CONFIG), load_yaml(AM_CONFIG)
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert jobs["rollbackd"]["static_configs"][0]["targets"] == [daemon["listen"]]
    (webhook,) = next(r for r in am["receivers"] if r["name"] == "rollbackd")["webhook_configs"]
    assert webhook["url"] == f"http://{daemon['listen']}/v1/webhook/alertmanager"
    serve = (ROOT / "scripts" / "serve").read_text()
    assert "> var/webhook-token" in serve and "ROLLBACKD_WEBHOOK_TOKEN" in serve
    assert daemon["prometheus"]["url"] == "http://127.0.0.1:9090"
    am_target = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert [daemon["alertmanager"]["url"].removeprefix("http://")] == am_target
    # The P95 regression rule needs a green release's baseline: releases are tracked.
    assert daemon["services"]["rag"]["releases"]["track"] is True
    assert "RAGLatencyP95Regression" in daemon["defaults"]["policy"]["rollback_alerts"]


def test_the_doctor_expects_exactly_the_shipped_alerts() -> None:
    from rollbackd.doctor import contract

    assert contract.RAG_ALERTS == RAG_ALERTS
    assert contract.ROLLBACKD_ALERTS == ROLLBACKD_ALERTS
    assert set(all_alerts()) == set(RAG_ALERTS) | set(ROLLBACKD_ALERTS)


def test_inhibitions_pair_warnings_with_their_criticals() -> None:
    alerts = all_alerts()
    pairs: set[tuple[str, str]] = set()
    for rule in load_yaml(AM_CONFIG)["inhibit_rules"]:
        assert rule["equal"] == ["service"]
        sources = _alertnames(rule["source_matchers"], alerts)
        targets = _alertnames(rule["target_matchers"], alerts)
        assert sources and targets, rule
        pairs |= {(s, t) for s in sources for t in targets}
    for source, _target in pairs:
        assert alerts[source]["labels"]["severity"] == "critical", source
    assert {
        ("RAGFaithfulnessCritical", "RAGFaithfulnessLow"),
        ("RAGGateFailRateHigh", "RAGGateFailRateElevated"),
        ("RAGLatencyP95Regression", "RAGLatencyP95High"),
        ("RAGServiceDown", "RAGHTTP5xxRateHigh"),
    } <= pairs
    # Possible data loss stays visible whatever else fires.
    assert not any(target == "RAGCollectionShrunk" for _, target in pairs)


def _alertnames(matchers: list[str], alerts: dict[str, Any]) -> set[str]:
    """The alert names a matcher list selects among the shipped alerts (regex anchored, as in Alertmanager)."""
    names = set(alerts)
    for matcher in matchers:
        match = re.fullmatch(r'(\w+)\s*(=~|!~|!=|=)\s*"(.*)"', matcher)
        assert match, matcher
        label, op, value = match.groups()
        if label != "alertname":
            names = {n for n in names if _matches(alerts[n]["labels"].get(label, ""), op, value)}
            continue
        names = {n for n in names if _matches(n, op, value)}
    return names


def _matches(actual: str, op: str, value: str) -> bool:
    hit = re.fullmatch(value, actual) is not None if op in ("=~", "!~") else actual == value
    return hit if op in ("=", "=~") else not hit


# ------------------------------------------------------------------------------ alertmanager, for real


def _alert(name: str, service: str, severity: str, team: str = "rag") -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "service": service, "severity": severity, "team": team},
        "annotations": {"summary": f"{name} on {service}"},
        "startsAt": datetime.now(UTC).isoformat(),
    }


def _alertnames_received(requests: list[ReceivedRequest]) -> set[tuple[str, str, str]]:
    return {
        (a["labels"]["alertname"], a["labels"]["service"], a["status"]) for r in requests for a in r.json()["alerts"]
    }


@pytest.mark.integration
def test_real_alertmanager_delivers_with_bearer_token_and_inhibits(tmp_path: Path) -> None:
    token_file = tmp_path / "webhook-token"
    token_file.write_text("s3cret-webhook-token\n")
    with WebhookReceiver() as receiver, AlertmanagerServer(example_config(receiver.url, token_file)) as am:
        am.post_alerts([_alert("RAGFaithfulnessCritical", "rag", "critical")])
        am.wait_for_alerts(lambda alerts: len(alerts) == 1)
        am.post_alerts(
            [_alert("RAGFaithfulnessLow", "rag", "warning"), _alert("RAGFaithfulnessLow", "edge", "warning")]
        )

        def inhibited(alerts: list[dict[str, Any]]) -> bool:
            state = {a["labels"]["service"] + "/" + a["labels"]["alertname"]: a["status"] for a in alerts}
            low = state.get("rag/RAGFaithfulnessLow")
            return low is not None and low["state"] == "suppressed" and bool(low["inhibitedBy"])

        am.wait_for_alerts(inhibited)
        requests = receiver.wait_for(
            lambda rs: (
                {("RAGFaithfulnessCritical", "rag", "firing"), ("RAGFaithfulnessLow", "edge", "firing")}
                <= _alertnames_received(rs)
            )
        )
        assert ("RAGFaithfulnessLow", "rag", "firing") not in _alertnames_received(requests)
        for request in requests:
            assert request.path == "/v1/webhook/alertmanager"
            assert request.header("Authorization") == "Bearer s3cret-webhook-token"
            assert request.header("Content-Type") == "application/json"
            body = request.json()
            assert body["version"] == "4"
            assert set(body["groupLabels"]) == {"alertname", "service"}
            assert body["externalURL"] == am.url


# ---------------------------------------------------------------------------------------- prometheus


def test_promtool_check_config(promtool: str) -> None:
    # Run on the file in place: its rule_files are relative to it (../rules/*.rules.yml), and
    # promtool checks those rule files too.
    result = run([promtool, "check", "config", str(PROM_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_prometheus_config_contents() -> None:
    config = load_yaml(PROM_CONFIG)
    rule_globs = [PROM_CONFIG.parent / p for p in config["rule_files"]]
    loaded = sorted(str(p.resolve()) for g in rule_globs for p in g.parent.glob(g.name))
    assert loaded == sorted(str(p) for p in (ROOT / "rules").glob("*.rules.yml"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["rollbackd"]["metrics_path"] == "/metrics"
    assert jobs["rollbackd"]["static_configs"] == [{"targets": ["127.0.0.1:8085"]}]
    (rag,) = jobs["rag"]["static_configs"]
    assert rag["labels"] == {"service": "rag"}
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]


@pytest.mark.integration
def test_real_prometheus_loads_the_example_config() -> None:
    config = load_yaml(PROM_CONFIG)
    # Started from a temp dir: make the rule paths absolute (they are relative to the config file).
    config["rule_files"] = [str((PROM_CONFIG.parent / p).resolve()) for p in config["rule_files"]]
    with PrometheusServer(config=config) as prom:
        groups = {g["name"]: [r["name"] for r in g["rules"]] for g in prom.rule_groups()}
        alerts = {name for names in groups.values() for name in names}
        assert set(RAG_ALERTS) | set(ROLLBACKD_ALERTS) <= alerts
        assert "rollbackd" in groups and "rag-gates" in groups
        found = poll(prom.active_targets, lambda ts: {t["labels"]["job"] for t in ts} == {"rag", "rollbackd"})
        targets = {t["labels"]["job"]: t for t in found}
        assert targets["rag"]["labels"]["service"] == "rag"
        assert targets["rollbackd"]["scrapeUrl"] == "http://127.0.0.1:8085/metrics"
        assert "service" not in targets["rollbackd"]["labels"]
        managers = poll(lambda: prom.api("alertmanagers")["data"]["activeAlertmanagers"], bool)
        assert [m["url"] for m in managers] == ["http://127.0.0.1:9093/api/v2/alerts"]
