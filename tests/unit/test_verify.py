"""Verification plumbing without servers: paths, verdict folding, the suite's limits, the step's outcomes,
config validation with key paths, alert_cleared decisions, golden-set loading and the CLI's exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rollbackd.capabilities import Capabilities
from rollbackd.errors import ConfigError, PayloadError
from rollbackd.reasons import IncidentState, Verdict
from rollbackd.records import Incident, Trigger
from rollbackd.verify import BaseVerifier, CheckOptions, CheckResult, VerifyContext, overall
from rollbackd.verify.alert_cleared import AlertClearedOptions, AlertClearedVerifier, _regex_escape
from rollbackd.verify.common import MISSING, lookup, parse_path, percentile, render_template
from rollbackd.verify.ragas_quick import GoldenError, load_golden
from rollbackd.verify.suite import VerifySuite
from rollbackd.wiring import parse_settings as parse

ENV = {"W": "test-webhook-token-0123456789", "A": "test-api-token-0123456789abcdef"}


# ---------------------------------------------------------------------------------------------- helpers
def test_json_paths() -> None:
    body = {"answer": "x", "contexts": [{"id": "a", "text": "t1"}, {"id": "b"}], "scores": {"f": 0.5}}
    assert lookup(body, "contexts[*].text") == ["t1"]
    assert lookup(body, "contexts[1].id") == "b" and lookup(body, "contexts[-1].id") == "b"
    assert lookup(body, "scores.f") == 0.5 and lookup(body, "contexts[5].id") is MISSING
    assert lookup(body, "answer.deeper") is MISSING
    assert parse_path("a.b[0][*]") == ["a", "b", 0, "*"]
    with pytest.raises(ValueError, match="bad JSON path"):
        parse_path("a..[x]")


def test_templates_substitute_data_never_code() -> None:
    assert render_template({"q": "{question}", "n": 3, "l": ["Q: {question}"]}, {"question": '{x} "y"'}) == {
        "q": '{x} "y"',
        "n": 3,
        "l": ['Q: {x} "y"'],
    }


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0 and percentile([1.0, 2.0, 3.0], 100) == 3.0


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (["pass", "pass"], Verdict.PASS),
        (["pass", "fail", "error"], Verdict.FAIL),
        (["pass", "error"], Verdict.INCONCLUSIVE),
        (["inconclusive"], Verdict.INCONCLUSIVE),
        ([], Verdict.INCONCLUSIVE),  # no data is never a pass
    ],
)
def test_overall_verdict(verdicts: list[str], expected: Verdict) -> None:
    assert overall([CheckResult(f"c{i}", Verdict(v), "s") for i, v in enumerate(verdicts)]) is expected


def test_dry_run_checks_do_not_count_and_results_round_trip() -> None:
    failing = CheckResult("smoke", Verdict.FAIL, "HTTP 500", figures={"attempts": 3}, dry_run=True)
    assert overall([failing, CheckResult("counts", Verdict.PASS, "ok")]) is Verdict.PASS
    assert overall([failing]) is Verdict.INCONCLUSIVE
    assert CheckResult.from_json(json.loads(json.dumps(failing.to_json()))) == failing
    assert failing.line() == "smoke: FAIL HTTP 500 (dry run, not counted)"


# ---------------------------------------------------------------------------------------------- suite
class Scripted(BaseVerifier):
    """Answers the verdicts it was given, one per attempt."""

    type: ClassVar[str] = "scripted"

    def __init__(self, name: str, verdicts: list[str], **opts: Any) -> None:
        super().__init__(CheckOptions(type="scripted", name=name, interval=0.01, **opts))
        self.verdicts = verdicts
        self.started: list[float] = []

    async def verify(self, ctx: VerifyContext) -> CheckResult:
        self.started.append(time.monotonic())
        verdict = self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]
        if verdict == "crash":
            raise RuntimeError("boom")
        if verdict == "hang":
            await asyncio.sleep(60)
        return self.result(Verdict(verdict), f"{verdict} once", figures={"n": 1})


class Recorder:
    def __init__(self) -> None:
        self.kv: dict[str, Any] = {}
        self.events: list[Any] = []
        self.verdicts: list[tuple[str, str, Verdict]] = []

    async def set_kv(self, key: str, value: Any) -> None:
        self.kv[key] = value

    async def get_kv(self, key: str) -> Any:
        return self.kv.get(key)

    async def append_event(self, event: Any) -> int:
        self.events.append(event)
        return len(self.events)

    def verdict(self, service: str, verifier: str, verdict: Verdict) -> None:
        self.verdicts.append((service, verifier, verdict))


def incident(kind: str = "alert", **trig: Any) -> Incident:
    return Incident(
        id="inc-1",
        service="rag",
        state=IncidentState.RUNNING,
        dry_run=False,
        created_at=100.0,
        trigger=Trigger(kind=kind, reason="r", requested_by="t", **trig),
        plan=[{"type": "verify"}],
    )


async def test_suite_retries_errors_up_to_the_limit_and_stops_on_fail() -> None:
    flaky = Scripted("flaky", ["error", "error", "pass"], error_limit=3)
    stubborn = Scripted("stubborn", ["error"], error_limit=2)
    failing = Scripted("failing", ["fail", "pass"])
    rec = Recorder()
    suite = VerifySuite(service="rag", checks=[flaky, stubborn, failing], store=rec, metrics=rec)
    results = await suite.run(incident=incident())
    assert [(r.verifier, r.verdict, r.attempts) for r in results] == [
        ("flaky", Verdict.PASS, 3),
        ("stubborn", Verdict.ERROR, 2),
        ("failing", Verdict.FAIL, 1),
    ]
    assert rec.kv["verify.last.rag"]["verdict"] == "fail" and rec.kv["verify.last.rag"]["incident_id"] == "inc-1"
    assert [e.data["sentence"] for e in rec.events] == [
        "flaky: PASS pass once",
        "stubborn: ERROR error once",
        "failing: FAIL fail once",
    ]
    assert rec.verdicts[1] == ("rag", "stubborn", Verdict.ERROR)


async def test_suite_turns_crashes_and_overruns_into_errors_and_honours_after_and_delay() -> None:
    crash = Scripted("crash", ["crash"], error_limit=1)
    hang = Scripted("hang", ["hang"], deadline=0.05, error_limit=1)
    first = Scripted("first", ["pass"], initial_delay=0.2)
    second = Scripted("second", ["pass"], after=["first"])
    suite = VerifySuite(service="rag", checks=[crash, hang, first, second])
    suite.grace = 0.1
    started = time.monotonic()
    results = await suite.run()
    assert results[0].summary == "verifier crashed: RuntimeError: boom"
    assert results[1].verdict is Verdict.ERROR and results[1].summary == "did not finish within its 0.05s deadline"
    assert first.started[0] - started >= 0.2 and second.started[0] >= first.started[0]
    with pytest.raises(PayloadError, match="unknown check"):
        suite.select(["nope"])
    only = await suite.run(only=["second"])  # `after` a check that is not selected: no wait
    assert [r.verifier for r in only] == ["second"]


# ---------------------------------------------------------------------------------------------- step
async def run_step(results: list[str]) -> tuple[Any, dict[str, Any]]:
    from rollbackd.config import StepConfig
    from rollbackd.plan import ServiceRuntime, StepContext
    from rollbackd.verify.step import Verify, VerifyStepOptions

    saved: dict[str, Any] = {}

    async def save(key: str, value: Any) -> None:
        saved[key] = value
        inc.context[key] = value

    inc = incident()
    checks = [Scripted(f"c{i}", [v], error_limit=1, inconclusive_limit=1) for i, v in enumerate(results)]
    runtime = ServiceRuntime(
        name="rag",
        config=None,  # type: ignore[arg-type]
        caps=Capabilities(verify=VerifySuite(service="rag", checks=checks)),
    )
    step = Verify(StepConfig(type="verify"), VerifyStepOptions())
    ctx = StepContext(
        incident=inc, runtime=runtime, step_name="verify", attempt=1, dry_run=False, outputs={}, log=None, save=save
    )  # type: ignore[arg-type]
    try:
        return await step.run(ctx), saved
    except Exception as exc:
        assert not await step.is_done(ctx)
        return exc, saved


async def test_step_outcomes() -> None:
    output, saved = await run_step(["pass", "pass"])
    assert output["verdict"] == "pass" and output["summary"] == "c0: PASS pass once\nc1: PASS pass once"
    assert saved["verification"]["verify"]["verdict"] == "pass"
    failed, _ = await run_step(["pass", "fail", "error"])
    assert failed.outcome is IncidentState.VERIFICATION_FAILED and not failed.retryable
    assert str(failed).startswith("verification failed (2 of 3 checks):\nc0: PASS")
    assert failed.output["results"][1]["verdict"] == "fail"
    unsure, _ = await run_step(["pass", "inconclusive"])
    assert unsure.outcome is IncidentState.VERIFICATION_INCONCLUSIVE


# ---------------------------------------------------------------------------------------------- config
def config(verify: Any, plan: list[Any] | None = None) -> str:
    svc = {
        "policy": {"confirm": "off"},
        "releases": {"track": False},
        "plan": plan or [{"type": "verify"}],
        "verify": verify,
    }
    return json.dumps(
        {"auth": {"webhook_token": "${W}", "api_tokens": [{"name": "t", "token": "${A}"}]}, "services": {"rag": svc}}
    )


def problems(verify: Any, plan: list[Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(config(verify, plan), ENV)
    return info.value.problems


def test_config_errors_name_the_key_path() -> None:
    found = problems(
        {
            "checks": [
                {"type": "smoke", "requests": [{"url": "http://127.0.0.1:1/"}]},
                {"type": "smoke", "requests": [{"url": "ftp://x"}]},
                {"type": "smok"},
                {
                    "type": "ragas_quick",
                    "golden": "g.yaml",
                    "request": {"url": "http://127.0.0.1:1/q"},
                    "scorer": {"type": "ragas", "base_url": "http://127.0.0.1:2/v1"},
                    "thresholds": {"faithfulness": 2},
                },
                {"type": "governance", "sources_file": "s.yaml", "after": ["later"]},
                {"type": "smoke", "requests": [{"url": "http://127.0.0.1:1/"}]},
            ]
        },
        plan=[{"type": "verify", "only": ["smoke", "nope"]}],
    )
    text = "\n".join(found)
    assert "services.rag.verify.checks[1].requests[0].url: String should match pattern" in text
    assert "services.rag.verify.checks[5].name: 'smoke' is used twice" in text
    assert "services.rag.verify.checks[2].type: unknown type 'smok'; known: alert_cleared, counts" in text
    assert "services.rag.verify.checks[3].thresholds.faithfulness: Input should be less than or equal to 1" in text
    assert "services.rag.verify.checks[4].after: 'later' is not an earlier check" in text
    assert "services.rag.plan[0].only: unknown check 'nope'" in text


def test_a_verify_step_needs_checks_and_ragas_needs_its_extra() -> None:
    with pytest.raises(ConfigError, match=r"services.rag.plan\[0\]: a `verify` step needs"):
        parse(config(None), ENV)
    spec = {
        "checks": [
            {
                "type": "ragas_quick",
                "golden": "g.yaml",
                "request": {"url": "http://h/q"},
                "scorer": {"type": "ragas", "base_url": "http://127.0.0.1:2/v1"},
            }
        ]
    }
    from rollbackd.verify.scorers import ragas

    if ragas.available():
        assert parse(config(spec), ENV).services["rag"].verify == spec
    else:
        assert problems(spec) == [
            "services.rag.verify.checks[0].scorer.type: the ragas scorer needs the optional "
            "extra: pip install 'rollbackd[ragas]'"
        ]


def test_the_step_timeout_must_cover_the_slowest_check() -> None:
    found = problems(
        {
            "checks": [
                {"type": "governance", "sources_file": "s.yaml", "deadline": "100s"},
                {"type": "alert_cleared", "initial_delay": "30s", "deadline": "200s", "after": ["governance"]},
            ]
        },
        plan=[{"type": "verify", "timeout": "5m"}],
    )
    assert found == [
        "services.rag.plan[0].timeout: 300s is shorter than check 'alert_cleared' may take (335s with "
        "its delay and the checks it runs after)"
    ]


def test_alert_cleared_must_run_after_traffic_is_back() -> None:
    """With users cut off the alert's rule has nothing to judge: a quiet rule is not a cleared alert."""
    checks = {"checks": [{"type": "governance", "sources_file": "s.yaml"}, {"type": "alert_cleared"}]}
    found = problems(checks, plan=[{"type": "verify"}, {"type": "traffic.restore"}])
    assert found == [
        "services.rag.plan[0].only: alert_cleared runs before traffic.restore (plan[1]); give it its "
        "own verify step after it"
    ]
    ok = [
        {"type": "verify", "only": ["governance"]},
        {"type": "traffic.restore"},
        {"type": "verify", "name": "alert_cleared", "only": ["alert_cleared"]},
    ]
    assert parse(config(checks, ok), ENV).services["rag"].plan


def test_valid_config_builds() -> None:
    settings = parse(config({"checks": [{"type": "governance", "sources_file": "s.yaml", "dry_run": True}]}), ENV)
    assert settings.services["rag"].verify is not None


# ---------------------------------------------------------------------------------------------- alert_cleared
class FakeProm:
    """Prometheus as alert_cleared sees it: ALERTS answers in turn, evidence ages, the rule's health."""

    def __init__(
        self,
        answers: list[list[dict[str, Any]]],
        *,
        age: float | None = 1.0,
        health: str = "ok",
        evaluated: float = 1e10,
        fail: bool = False,
    ) -> None:
        self.answers = answers
        self.queries: list[str] = []
        self.age, self.health, self.evaluated, self.fail = age, health, evaluated, fail

    async def query(self, expr: str) -> list[dict[str, Any]]:
        from rollbackd.errors import BackendError

        if self.fail:
            raise BackendError("prometheus", "http://p/api/v1/query: HTTP 503: down")
        self.queries.append(expr)
        if expr.startswith("time() - "):
            return [] if self.age is None else [{"metric": {}, "value": [0, str(self.age)]}]
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def scalar(self, expr: str) -> float:
        return 1000.0

    async def alert_rules(self, name: str) -> list[dict[str, Any]]:
        from rollbackd.records import iso

        return [{"name": name, "health": self.health, "lastError": "bad", "lastEvaluation": iso(self.evaluated)}]


class FakeStore:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def recent_alerts(self, service: str | None, limit: int) -> list[dict[str, Any]]:
        return self.rows


def cleared(**opts: Any) -> AlertClearedVerifier:
    return AlertClearedVerifier(AlertClearedOptions(type="alert_cleared", interval=0.01, stable_for=0, **opts))


def actx(inc: Incident | None, deadline: float = 0.3, **kw: Any) -> VerifyContext:
    return VerifyContext(service="rag", deadline=time.monotonic() + deadline, incident=inc, **kw)


FIRING = [{"metric": {}}]


async def test_alert_cleared_by_prometheus_after_polls() -> None:
    prom = FakeProm([FIRING, FIRING, []])
    inc = incident(alertname='RAG"Gate', fingerprint="fp", labels={"service": "rag"})
    result = await cleared().verify(actx(inc, prometheus=prom))
    assert result.verdict is Verdict.PASS and result.figures == {"polls": 3}
    assert prom.queries[0] == 'ALERTS{alertname="RAG\\"Gate",alertstate="firing",service="rag"}'
    assert prom.queries[-1] == 'time() - max(timestamp(up{service="rag"} == 1))'


async def test_a_resolved_notification_is_only_a_hint() -> None:
    """A stale resolution (the alert fired again since, Prometheus says firing) is not a clearing, and
    a resolution without Prometheus proves nothing: INCONCLUSIVE, never PASS."""
    inc = incident(alertname="RAGGateFailRateHigh", fingerprint="fp")
    resolved = {"fingerprint": "fp", "status": "resolved", "received_at": 150.0}
    refired = {**resolved, "status": "firing", "received_at": 160.0}
    alone = await cleared().verify(actx(inc, store=FakeStore([resolved])))
    assert alone.verdict is Verdict.INCONCLUSIVE and "no Prometheus" in alone.summary
    stale = await cleared().verify(actx(inc, store=FakeStore([resolved, refired]), prometheus=FakeProm([FIRING])))
    assert stale.verdict is Verdict.FAIL and stale.summary.startswith("RAGGateFailRateHigh still firing after")
    assert stale.details["hint"] == "latest notification since the incident opened: firing"


async def test_alert_cleared_needs_fresh_samples_and_an_evaluated_rule() -> None:
    inc = incident(alertname="RAGGateFailRateHigh", fingerprint="fp")
    down = await cleared().verify(actx(inc, prometheus=FakeProm([[]], age=None)))
    assert down.verdict is Verdict.INCONCLUSIVE
    assert down.summary.endswith('no sample of the service: up{service="rag"} == 1 returns nothing'), down.summary
    stale = await cleared().verify(actx(inc, prometheus=FakeProm([[]], age=600.0)))
    assert stale.verdict is Verdict.INCONCLUSIVE and "last seen 600s ago" in stale.summary
    broken = await cleared().verify(actx(inc, prometheus=FakeProm([[]], health="err")))
    assert broken.verdict is Verdict.INCONCLUSIVE and "unhealthy (err: bad)" in broken.summary
    old = await cleared().verify(actx(inc, prometheus=FakeProm([[]], evaluated=10.0)))
    assert old.verdict is Verdict.INCONCLUSIVE and "not been evaluated since the check started" in old.summary


async def test_prometheus_down_is_an_error_never_still_firing() -> None:
    inc = incident(alertname="RAGGateFailRateHigh", fingerprint="fp")
    rows = [{"fingerprint": "fp", "status": "firing", "received_at": 150.0}]
    result = await cleared().verify(actx(inc, store=FakeStore(rows), prometheus=FakeProm([[]], fail=True)))
    assert result.verdict is Verdict.ERROR and "still firing" not in result.summary
    assert result.summary.startswith("could not tell whether RAGGateFailRateHigh cleared: Prometheus: ")


async def test_a_refire_inside_the_stable_window_fails() -> None:
    inc = incident(alertname="RAGGateFailRateHigh", fingerprint="fp")
    check = AlertClearedVerifier(AlertClearedOptions(type="alert_cleared", interval=0.01, stable_for=0.2))
    result = await check.verify(actx(inc, deadline=2, prometheus=FakeProm([[], [], FIRING])))
    assert result.verdict is Verdict.FAIL and "fired again" in result.summary, result.summary
    steady = await check.verify(actx(inc, deadline=2, prometheus=FakeProm([[]])))
    assert steady.verdict is Verdict.PASS and "stayed clear for 0.2s" in steady.summary
    short = await check.verify(actx(inc, deadline=0.1, prometheus=FakeProm([[]])))
    assert short.verdict is Verdict.INCONCLUSIVE and "clear for only" in short.summary
    with pytest.raises(ValueError, match="stable_for 30s must be shorter than deadline 10s"):
        AlertClearedOptions(type="alert_cleared", deadline=10)


async def test_alert_cleared_without_an_alert_is_inconclusive_unless_configured() -> None:
    manual = incident(kind="manual")
    result = await cleared().verify(actx(manual))
    assert (
        result.verdict is Verdict.INCONCLUSIVE
        and result.summary == "no alert to clear: the incident was opened by manual"
    )
    skipped = await cleared(skip_without_alert=True).verify(actx(manual))
    assert skipped.verdict is Verdict.PASS and "skip_without_alert" in skipped.summary


async def test_alert_cleared_on_demand_checks_the_rollback_alerts() -> None:
    prom = FakeProm([[{"metric": {"alertname": "RAGHTTP5xxRateHigh"}}]])
    result = await cleared().verify(actx(None, prometheus=prom, rollback_alerts=("RAG*", "X.Y")))
    assert result.verdict is Verdict.FAIL and result.summary == "rollback alerts firing now: RAGHTTP5xxRateHigh"
    assert 'alertname=~"RAG.*|X\\\\.Y"' in prom.queries[0]
    assert (await cleared().verify(actx(None))).verdict is Verdict.INCONCLUSIVE
    blind = await cleared().verify(actx(None, prometheus=FakeProm([[]], age=None), rollback_alerts=("RAG*",)))
    assert blind.verdict is Verdict.INCONCLUSIVE and "no sample of the service" in blind.summary
    ok = await cleared().verify(actx(None, prometheus=FakeProm([[]]), rollback_alerts=("RAG*",)))
    assert ok.verdict is Verdict.PASS
    assert _regex_escape("a?b") == "a.b"


# ---------------------------------------------------------------------------------------------- golden, CLI
def test_golden_sets_load_from_yaml_and_jsonl(tmp_path: Path) -> None:
    golden = load_golden(str(Path(__file__).resolve().parents[1] / "data" / "golden.yaml"))
    assert len(golden) == 20 and golden[0]["sources"] == ["doc-0001"]
    jsonl = tmp_path / "g.jsonl"
    jsonl.write_text('{"question": "q?", "ground_truth": "a."}\n\n{"question": "q2?", "ground_truth": "b."}\n')
    assert load_golden(str(jsonl), 1) == [{"id": "q01", "question": "q?", "ground_truth": "a.", "sources": []}]
    jsonl.write_text('{"question": "q?"}\n')
    with pytest.raises(GoldenError, match="item 1: needs `question` and `ground_truth`"):
        load_golden(str(jsonl))


def test_cli_exit_codes_and_text() -> None:
    from rollbackd.cli.verify import exit_code, render

    def body(*verdicts: str, dry: bool = False) -> dict[str, Any]:
        results = [CheckResult(f"c{i}", Verdict(v), "s").to_json() for i, v in enumerate(verdicts)]
        return {
            "service": "rag",
            "dry_run": False,
            "results": results,
            "verdict": overall([CheckResult.from_json(r) for r in results]).value,
        }

    assert exit_code(body("pass", "pass")) == 0
    assert exit_code(body("pass", "fail", "error")) == 4
    assert exit_code(body("pass", "error", "inconclusive")) == 5
    assert exit_code(body("pass", "inconclusive")) == 6
    assert exit_code(body()) == 6  # nothing counted is never a pass
    assert render(body("pass", "fail")).splitlines() == [
        "verification of rag: FAIL",
        "  c0             PASS         s",
        "  c1             FAIL         s",
    ]


RAGAS_MISSING = """
import sys
sys.modules["ragas"] = None  # the extra is not installed: any import of it raises ImportError
from rollbackd.verify.scorers import ragas
try:
    ragas.RagasScorer(ragas.RagasOptions(base_url="http://127.0.0.1:1/v1"))
except ragas.ScorerUnavailable as exc:
    print(exc)
else:
    raise SystemExit("no ScorerUnavailable")
"""


def test_ragas_scorer_names_the_extra_when_missing() -> None:
    """In a fresh interpreter where the `ragas` extra cannot be imported (installed or not here)."""
    out = subprocess.run(
        [sys.executable, "-c", RAGAS_MISSING],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "daemon")},
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'rollbackd[ragas]'" in out.stdout
