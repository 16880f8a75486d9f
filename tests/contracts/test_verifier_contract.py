"""The Verifier contract, subclassed once per backend: registered under its type, one-line describe and
summary, JSON-safe result, ERROR (never an exception) when what it checks cannot be reached, and
INCONCLUSIVE without data - no data is never a pass."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rollbackd.reasons import Verdict
from rollbackd.registry import load_class
from rollbackd.verify import BACKENDS, CheckOptions, CheckResult, Verifier, VerifyContext
from tests.support.images import free_port

DATA = Path(__file__).resolve().parents[1] / "data"


def dead() -> str:
    return f"http://127.0.0.1:{free_port()}"


class VerifierContract:
    type: ClassVar[str]

    def options(self, tmp_path: Path, *, reachable: bool) -> dict[str, Any]:
        raise NotImplementedError

    def no_data_context(self, tmp_path: Path) -> tuple[dict[str, Any], VerifyContext]:
        raise NotImplementedError

    def unreachable_context(self) -> VerifyContext:
        return VerifyContext(service="rag", deadline=time.monotonic() + 0.5)

    def build(self, options: dict[str, Any]) -> Verifier:
        cls = load_class(BACKENDS[self.type])
        verifier: Verifier = cls(
            cls.Options.model_validate({"type": self.type, "name": "x", "interval": 0.05, "error_limit": 1, **options})
        )
        return verifier

    def check_shape(self, verifier: Verifier, result: CheckResult) -> None:
        assert isinstance(result, CheckResult) and result.verifier == "x" and result.type == self.type
        assert result.summary and "\n" not in result.summary
        assert CheckResult.from_json(json.loads(json.dumps(result.to_json()))) == result

    def test_registered_with_options_extending_the_common_ones(self) -> None:
        cls = load_class(BACKENDS[self.type])
        assert cls.type == self.type and issubclass(cls.Options, CheckOptions)

    async def test_unreachable_is_an_error_not_an_exception(self, tmp_path: Path) -> None:
        verifier = self.build(self.options(tmp_path, reachable=False))
        assert "\n" not in verifier.describe() and verifier.describe().startswith(self.type)
        result = await verifier.verify(self.unreachable_context())
        self.check_shape(verifier, result)
        assert result.verdict is Verdict.ERROR, result

    async def test_no_data_is_inconclusive(self, tmp_path: Path) -> None:
        options, ctx = self.no_data_context(tmp_path)
        verifier = self.build(options)
        result = await verifier.verify(ctx)
        self.check_shape(verifier, result)
        assert result.verdict is Verdict.INCONCLUSIVE, result


class TestSmoke(VerifierContract):
    type = "smoke"

    def options(self, tmp_path: Path, *, reachable: bool) -> dict[str, Any]:
        return {"requests": [{"url": f"{dead()}/healthz"}], "warmup": 0, "consecutive": 2}

    def no_data_context(self, tmp_path: Path) -> tuple[dict[str, Any], VerifyContext]:
        import http.server
        import threading

        class Ok(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        # the deadline ends during the warm-up: nothing was measured
        return (
            {"requests": [{"url": url}], "warmup": 100, "interval": 0.01},
            VerifyContext(service="rag", deadline=time.monotonic() + 0.1),
        )

    def teardown_method(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()


class TestCounts(VerifierContract):
    type = "counts"

    def options(self, tmp_path: Path, *, reachable: bool) -> dict[str, Any]:
        return {"stores": {"pg": {"dsn": f"postgresql://127.0.0.1:{free_port()}/x"}}}

    def unreachable_context(self) -> VerifyContext:
        from rollbackd.reasons import IncidentState
        from rollbackd.records import Incident, Trigger

        inc = Incident(
            id="i",
            service="rag",
            state=IncidentState.RUNNING,
            dry_run=False,
            created_at=0.0,
            trigger=Trigger(kind="manual", reason="r", requested_by="t"),
            plan=[{"type": "data.prepare"}],
        )
        out = {"restored": {"pg": {"kind": "postgres", "expected": {"tables": {"public.docs": 1}}}}}
        return VerifyContext(service="rag", deadline=time.monotonic() + 1, incident=inc, outputs={"data.prepare": out})

    def no_data_context(self, tmp_path: Path) -> tuple[dict[str, Any], VerifyContext]:
        return self.options(tmp_path, reachable=True), VerifyContext(service="rag", deadline=time.monotonic() + 1)


class TestRagasQuick(VerifierContract):
    type = "ragas_quick"

    def options(self, tmp_path: Path, *, reachable: bool) -> dict[str, Any]:
        return {"golden": str(DATA / "golden.yaml"), "request": {"url": f"{dead()}/query"}}

    def no_data_context(self, tmp_path: Path) -> tuple[dict[str, Any], VerifyContext]:
        empty = tmp_path / "golden.yaml"
        empty.write_text("[]\n")
        return (
            {"golden": str(empty), "request": {"url": f"{dead()}/query"}},
            VerifyContext(service="rag", deadline=time.monotonic() + 1),
        )


class TestGovernance(VerifierContract):
    type = "governance"

    def options(self, tmp_path: Path, *, reachable: bool) -> dict[str, Any]:
        return {
            "sources_file": str(DATA / "sources.yaml"),
            "corpus": {"dsn": f"postgresql://127.0.0.1:{free_port()}/x", "timeout": 2},
        }

    def no_data_context(self, tmp_path: Path) -> tuple[dict[str, Any], VerifyContext]:
        path = tmp_path / "sources.yaml"
        path.write_text("sources: []\n")
        return {"sources_file": str(path)}, VerifyContext(service="rag", deadline=time.monotonic() + 1)


class TestAlertCleared(VerifierContract):
    type = "alert_cleared"

    def options(self, tmp_path: Path, *, reachable: bool) -> dict[str, Any]:
        return {}

    def unreachable_context(self) -> VerifyContext:
        from rollbackd.prom import Prometheus

        self._prom = Prometheus(dead(), timeout=1)
        return VerifyContext(
            service="rag",
            deadline=time.monotonic() + 1,
            prometheus=self._prom,
            rollback_alerts=("RAGGateFailRateHigh",),
        )

    def no_data_context(self, tmp_path: Path) -> tuple[dict[str, Any], VerifyContext]:
        return {}, VerifyContext(service="rag", deadline=time.monotonic() + 1)

    async def test_unreachable_is_an_error_not_an_exception(self, tmp_path: Path) -> None:
        try:
            await super().test_unreachable_is_an_error_not_an_exception(tmp_path)
        finally:
            await self._prom.close()


def test_every_backend_has_a_contract_class() -> None:
    covered = {cls.type for cls in VerifierContract.__subclasses__()}
    assert covered == set(BACKENDS)


@pytest.mark.parametrize("mode", ["good", "bad", "error", "slow", "garbage"])
async def test_ragas_scorer_against_the_openai_stub(mode: str) -> None:
    """Real ragas (the pinned extra) judging through an OpenAI-compatible stub on loopback: good and bad
    answers get their scores; a judge error, timeout or garbage is a JudgeError (INCONCLUSIVE, never FAIL)."""
    from rollbackd.verify.ragas_quick import RagasQuickOptions, RagasQuickVerifier
    from rollbackd.verify.scorers import ragas
    from tests.support.openai_stub import OpenAIStub

    async with OpenAIStub(mode=mode, delay=2.0) as stub:
        samples = [{"question": "How wide is the mirror?", "ground_truth": "Four meters."}]
        scorer = {"type": "ragas", "base_url": stub.base_url, "timeout": 1}
        check = RagasQuickVerifier(
            RagasQuickOptions.model_validate(
                {
                    "type": "ragas_quick",
                    "golden": str(DATA / "golden.yaml"),
                    "limit": 5,
                    "request": {"url": f"{stub.url}/fake-rag"},
                    "scorer": scorer,
                }
            )
        )
        from rollbackd.verify.scorers import Sample

        sample = Sample(
            "q01",
            samples[0]["question"],
            samples[0]["ground_truth"],
            "The mirror is four meters wide.",
            ["The Heron telescope mirror is four meters wide."],
        )
        # The extra is part of the test install (scripts/test: `.[test,ragas]`): its absence is a failure.
        assert ragas.available(), "the ragas extra is missing: pip install -e '.[test,ragas]' (scripts/test does)"
        assert check.describe().endswith("scorer ragas")
        judge = ragas.RagasScorer(ragas.RagasOptions(base_url=stub.base_url, timeout=1))
        try:
            if mode in ("good", "bad"):
                value = 1.0 if mode == "good" else 0.0
                assert await judge.score([sample]) == [
                    dict.fromkeys(("faithfulness", "answer_relevancy", "context_recall"), value)
                ]
                assert stub.requests, "the stub was not asked"
            else:
                from rollbackd.verify.scorers import JudgeError

                with pytest.raises(JudgeError):
                    await judge.score([sample])
        finally:
            await judge.close()
