"""The 3 AM story of DESIGN, for real: the RAG service as a Podman container (v1 good, v2 bad), its
Postgres database and Qdrant collection with a corpus, Prometheus with the shipped rules (time-compressed,
see tests/e2e/stack.py), Alertmanager with the example config, `rollbackd serve`, the Slack recorder and
a traffic switch. Nothing is simulated inside rollbackd: the alert arrives through Alertmanager."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.config import rollbackd_config
from tests.e2e.stack import FACTOR, Stack, wait_until
from tests.support import corpus
from tests.support.podman import PodmanService

pytestmark = pytest.mark.e2e
# With the shipped rules (`make e2e-real`, FACTOR 1) an alert needs its `for` (3-5 min) plus its window.
WAIT = 240 if FACTOR >= 60 else 1200
ROLLBACK_ALERTS = {"RAGGateFailRateHigh", "RAGHTTP5xxRateHigh", "RAGLatencyP95Regression", "RAGFaithfulnessCritical"}


@pytest.fixture
def stack(tmp_path: Path, podman: PodmanService) -> Iterator[Stack]:
    with Stack(tmp_path / "stack", podman) as s:
        s.start(rollbackd_config)
        yield s


def api(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    assert stack.daemon is not None
    status, answer = stack.daemon.api.call(method, path, body)
    assert status < 300, (status, answer)
    return answer


def green_v1_with_snapshot(stack: Stack) -> None:
    """The afternoon before: v1 recorded by the pipeline, marked green, its data snapshotted."""
    api(
        stack,
        "POST",
        "/v1/releases",
        {"version": "v1", "image": "rag:v1", "digest": stack.image_v1, "schema_version": "1"},
    )
    api(stack, "POST", "/v1/releases/v1/green", {"reason": "canary passed, 30 min clean"})
    api(stack, "POST", "/v1/snapshots", {"reason": "release v1 green"})


def deploy_v2(stack: Stack, **env: str) -> None:
    """18:00: v2 goes out, and its migration changes the corpus."""
    stack.run_release(stack.image_v2, env=env)
    api(
        stack,
        "POST",
        "/v1/releases",
        {"version": "v2", "image": "rag:v2", "digest": stack.image_v2, "schema_version": "2"},
    )
    asyncio.run(corpus.change_corpus(stack.dsn))
    assert stack.rag_version() == "v2"


def incident_root(stack: Stack, incident_id: str) -> Any:
    """The incident's root message (other roots are reports of notify-only alerts, e.g. RollbackdHeld)."""
    (root,) = [m for m in stack.slack.roots() if incident_id in json.dumps(m.blocks) + (m.text or "")]
    return root


def the_incident(stack: Stack, states: tuple[str, ...], timeout: float = WAIT) -> dict[str, Any]:
    incidents = wait_until(lambda: api(stack, "GET", "/v1/incidents")["incidents"], timeout, "an incident")
    assert stack.daemon is not None
    return stack.daemon.api.wait_incident(incidents[0]["id"], states, timeout=timeout)


def test_gate_failure_rolls_back_data_and_code_and_verifies(stack: Stack) -> None:
    green_v1_with_snapshot(stack)
    live_counts_v1 = asyncio.run(corpus.table_counts(stack.dsn))
    deploy_v2(stack)
    stack.fault(gate_fail_fraction=0.09)  # 03:00: 9 % of answers fail the gates

    incident = the_incident(stack, ("resolved", "failed", "verification_failed", "verification_inconclusive"))
    assert incident["state"] == "resolved", json.dumps([(s["name"], s["state"], s["error"]) for s in incident["steps"]])
    assert incident["trigger"]["alertname"] in ROLLBACK_ALERTS
    steps = {s["name"]: s for s in incident["steps"]}
    assert [s["name"] for s in incident["steps"]] == [
        "snapshot.safety",
        "data.prepare",
        "traffic.cut",
        "data.swap",
        "deploy.revert",
        "verify",
        "traffic.restore",
        "alert_cleared",
    ]
    assert all(s["state"] == "done" for s in incident["steps"])
    assert incident["target"]["version"] == "v1"

    # data and code are v1's again
    assert stack.rag_version() == "v1" and stack.running_image() == stack.image_v1
    counts = asyncio.run(corpus.table_counts(stack.dsn))
    assert {k: v for k, v in counts.items() if k != "conversations"} == {
        k: v for k, v in live_counts_v1.items() if k != "conversations"
    }
    # every verifier passed; traffic was cut during the swap and given back
    verdicts = {
        r["verifier"]: r["verdict"] for name in ("verify", "alert_cleared") for r in steps[name]["output"]["results"]
    }
    assert set(verdicts.values()) == {"pass"}, verdicts
    assert set(verdicts) == {"smoke", "counts", "ragas_quick", "governance", "alert_cleared"}
    assert stack.traffic.history == [0, 100]
    # the alert resolved, and the Slack thread tells the whole story
    wait_until(
        lambda: (
            not stack.prometheus.query(
                'ALERTS{alertname=~"RAGGateFailRateHigh|RAGFaithfulnessCritical",alertstate="firing"}'
            )
        ),
        WAIT,
        "resolved",
    )
    root = incident_root(stack, incident["id"])
    thread = [m.text for m in stack.slack.thread(root.ts)]
    for step in steps:
        assert any(step in t and "done" in t for t in thread), (step, thread)
    assert "resolved" in stack.slack.updates(root.ts)[-1].text
    # Alertmanager's repeats and the resolved notification never opened a second incident
    assert len(api(stack, "GET", "/v1/incidents")["incidents"]) == 1
    status = api(stack, "GET", "/v1/status")["services"]["rag"]
    assert status["held"] is None and status["live_release"] == "v1"


def test_5xx_with_failing_verification_stays_cut_and_held(stack: Stack) -> None:
    green_v1_with_snapshot(stack)
    deploy_v2(stack, RAG_MODE="good")  # v2's only problem is its 5xx, so that rule is the one to fire
    # A governance problem a rollback cannot fix: a critical source's review is overdue.
    sources = yaml.safe_load((stack.dir / "sources.yaml").read_text())
    critical = next(s for s in sources["sources"] if s["critical"])
    critical["review_date"] = "2020-01-01"
    (stack.dir / "sources.yaml").write_text(yaml.safe_dump(sources))
    stack.fault(error_fraction=0.05)

    incident = the_incident(stack, ("resolved", "failed", "verification_failed", "verification_inconclusive"))
    assert incident["trigger"]["alertname"] == "RAGHTTP5xxRateHigh"
    assert incident["state"] == "verification_failed", json.dumps(incident, indent=1)[:4000]
    assert [s["name"] for s in incident["steps"]][-1] == "verify"  # traffic.restore never ran
    assert stack.traffic.weight == 0 and stack.traffic.history == [0]
    verify = incident["steps"][-1]
    assert critical["id"] in verify["error"]
    status = api(stack, "GET", "/v1/status")["services"]["rag"]
    assert status["held"]["incident_id"] == incident["id"]
    # nothing loops: the alert resolves (v1 serves no 5xx), no second incident opens, the hold stays
    wait_until(
        lambda: any(
            d["reason"] == "resolved" for d in api(stack, "GET", "/v1/status")["services"]["rag"]["last_decisions"]
        ),
        WAIT,
        "resolved",
    )
    assert len(api(stack, "GET", "/v1/incidents")["incidents"]) == 1
    assert api(stack, "GET", "/v1/status")["services"]["rag"]["held"] is not None
    root = incident_root(stack, incident["id"])
    assert any("<!subteam^S0ONCALL>" in m.text for m in stack.slack.thread(root.ts))
