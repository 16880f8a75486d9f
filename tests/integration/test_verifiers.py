"""Each verifier against the reference RAG service (a subprocess) on a real Postgres corpus and a Qdrant
collection on the test server: PASS on good, FAIL with a precise message on bad, ERROR when the thing
to check cannot be reached, INCONCLUSIVE without data."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbackd.capabilities import Capabilities
from rollbackd.reasons import Verdict
from rollbackd.verify import VerifyContext
from rollbackd.verify.alert_cleared import AlertClearedOptions, AlertClearedVerifier
from rollbackd.verify.counts import CountsOptions, CountsVerifier
from rollbackd.verify.governance import GovernanceOptions, GovernanceVerifier
from rollbackd.verify.ragas_quick import RagasQuickOptions, RagasQuickVerifier
from rollbackd.verify.smoke import SmokeOptions, SmokeVerifier
from tests.support import corpus, images, pg
from tests.support.qdrant import QdrantTestServer

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
EXPECTED_TABLES = {"public.docs": 200, "public.chunks": 200, "public.conversations": 25, "public.schema_version": 1}


@dataclass
class World:
    dsn: str
    qdrant: QdrantTestServer
    rag: images.RagServiceProcess

    @property
    def url(self) -> str:
        return self.rag.url

    def fault(self, **body: Any) -> None:
        method = "POST" if body else "DELETE"
        req = urllib.request.Request(
            f"{self.url}/admin/fault",
            data=json.dumps(body).encode() if body else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    dsn = pg.fresh_database_sync("verifiers")
    qdrant = QdrantTestServer(tmp_path_factory.mktemp("qdrant") / "storage")
    try:
        asyncio.run(corpus.create_corpus(dsn))
        with qdrant:
            asyncio.run(corpus.load_points(qdrant.url, "docs__v1", dsn=dsn, alias="docs"))
            rag = images.RagServiceProcess(
                env={
                    "RAG_PG_DSN": dsn,
                    "RAG_QDRANT_URL": qdrant.url,
                    "RAG_QDRANT_COLLECTION": "docs",
                    "RAG_VERSION": "v1",
                    "RAG_RECORD_CONVERSATIONS": "0",
                }
            )
            with rag:
                yield World(dsn, qdrant, rag)
    finally:
        pg.drop_database_sync(dsn)


@pytest.fixture
def rag(world: World) -> Iterator[World]:
    world.fault()
    yield world
    world.fault()


def ctx(deadline: float = 10.0, **kw: Any) -> VerifyContext:
    return VerifyContext(service="rag", deadline=time.monotonic() + deadline, **kw)


def dead_url() -> str:
    return f"http://127.0.0.1:{images.free_port()}"


# ---------------------------------------------------------------------------------------------- smoke
def smoke(url: str, **kw: Any) -> SmokeVerifier:
    requests = kw.pop("requests", None) or [
        {"name": "healthz", "url": f"{url}/healthz", "expect_json": {"status": "ok"}},
        {
            "name": "query",
            "method": "POST",
            "url": f"{url}/query",
            "json": {"question": "How wide is the Heron telescope mirror and where was it polished?"},
            "expect_fields": ["answer", "contexts[0].id"],
            "expect_json": {"contexts[0].id": "doc-0001"},
            "latency_budget": "1s",
        },
    ]
    return SmokeVerifier(
        SmokeOptions.model_validate(
            {"type": "smoke", "requests": requests, "warmup": 1, "consecutive": 3, "interval": 0.05, **kw}
        )
    )


async def test_smoke_passes_on_the_good_service(rag: World) -> None:
    result = await smoke(rag.url).verify(ctx())
    assert result.verdict is Verdict.PASS, result
    assert result.figures["attempts"] == 3 and result.figures["successes"] == 3 and result.figures["warmup"] == 1
    assert result.summary.startswith("3/3 consecutive rounds ok") and "p50" in result.summary


async def test_smoke_fails_on_a_500_with_the_request_named(rag: World) -> None:
    rag.fault(error_fraction=1.0)
    result = await smoke(rag.url).verify(ctx(deadline=1.0))
    assert result.verdict is Verdict.FAIL
    assert result.summary.startswith("query: HTTP 500 (expected 200)"), result.summary
    assert result.figures["successes"] == 0


async def test_smoke_fails_on_a_slow_endpoint(rag: World) -> None:
    rag.fault(latency_s=0.3)
    check = smoke(
        rag.url,
        requests=[
            {
                "name": "query",
                "method": "POST",
                "url": f"{rag.url}/query",
                "json": {"question": "When do Osprey firmware releases ship?"},
                "latency_budget": "100ms",
            }
        ],
    )
    result = await check.verify(ctx(deadline=1.5))
    assert result.verdict is Verdict.FAIL
    assert "query: took" in result.summary and "over the 100ms budget" in result.summary
    assert int(result.figures["max_ms"]) >= 300


async def test_smoke_rides_out_a_blip_and_needs_consecutive_passes(rag: World) -> None:
    rag.fault(error_fraction=0.5)  # every other query fails: never 3 in a row
    result = await smoke(rag.url).verify(ctx(deadline=1.0))
    assert result.verdict is Verdict.FAIL and "HTTP 500" in result.summary
    rag.fault(error_fraction=0.25)  # fails 1 in 4: 3 in a row happen
    result = await smoke(rag.url).verify(ctx(deadline=5.0))
    assert result.verdict is Verdict.PASS, result.summary
    assert int(result.figures["attempts"]) > 3


async def test_smoke_is_an_error_when_the_service_refuses_connections() -> None:
    result = await smoke(dead_url()).verify(ctx(deadline=0.5))
    assert result.verdict is Verdict.ERROR
    assert "connection refused" in result.summary


# ---------------------------------------------------------------------------------------------- counts
def prepare_output(tables: dict[str, int], points: int) -> dict[str, Any]:
    return {
        "snapshot_set": "set-1",
        "restored": {
            "pg": {"kind": "postgres", "database": "x", "expected": {"tables": tables}},
            "qdrant": {"kind": "qdrant", "alias": "docs", "expected": {"collections": {"docs": points}}},
        },
    }


def incident_with(plan: list[dict[str, Any]]) -> Any:
    from rollbackd.reasons import IncidentState
    from rollbackd.records import Incident, Trigger

    return Incident(
        id="inc-1",
        service="rag",
        state=IncidentState.RUNNING,
        dry_run=False,
        created_at=time.time(),
        trigger=Trigger(kind="manual", reason="test", requested_by="t"),
        plan=plan,
    )


def counts(world: World, **kw: Any) -> CountsVerifier:
    return CountsVerifier(
        CountsOptions.model_validate(
            {"type": "counts", "stores": {"pg": {"dsn": world.dsn}, "qdrant": {"url": world.qdrant.url}}, **kw}
        )
    )


async def test_counts_pass_against_the_restored_manifest(rag: World) -> None:
    inc = incident_with([{"type": "data.prepare", "name": "prepare"}, {"type": "verify"}])
    result = await counts(rag).verify(ctx(incident=inc, outputs={"prepare": prepare_output(EXPECTED_TABLES, 200)}))
    assert result.verdict is Verdict.PASS, result.summary
    assert result.figures == {"compared": 5, "mismatches": 0}
    assert result.summary == "5 tables/collections match snapshot set set-1"


async def test_counts_fail_naming_the_table_and_both_numbers(rag: World) -> None:
    inc = incident_with([{"type": "data.prepare"}])
    tables = {**EXPECTED_TABLES, "public.docs": 210, "public.conversations": 999}
    check = counts(rag, exclude=["conversations"], tolerance={"absolute": 5})
    result = await check.verify(ctx(incident=inc, outputs={"data.prepare": prepare_output(tables, 180)}))
    assert result.verdict is Verdict.FAIL
    assert result.summary == ("public.docs: 200 live, 210 expected; docs: 200 live, 180 expected (tolerance ±5)")
    within = await counts(rag, tolerance={"percent": 10}, exclude=["public.conversations"]).verify(
        ctx(incident=inc, outputs={"data.prepare": prepare_output(tables, 180)})
    )
    assert within.verdict is Verdict.FAIL and within.summary.startswith("docs: 200 live, 180 expected")


async def test_counts_without_a_manifest_are_inconclusive(rag: World) -> None:
    result = await counts(rag).verify(ctx())
    assert result.verdict is Verdict.INCONCLUSIVE and result.summary == "no manifest to compare with"


@dataclass
class FakeSet:
    id: str
    release: str | None
    reason: str
    points: int
    verified: bool = True

    @property
    def is_safety(self) -> bool:  # as SnapshotSet: from the recorded kind (old sets: their reason)
        return self.reason.startswith("safety snapshot")

    @property
    def manifests(self) -> dict[str, Any]:
        return {
            "pg": {"tables": {t: {"rows": n} for t, n in EXPECTED_TABLES.items()}},
            "qdrant": {"collections": {"docs": {"points": self.points}}},
        }


class Sets:
    """The snapshot sets as DataSet lists them (newest first), and the live release."""

    def __init__(self, live: str | None, *sets: FakeSet) -> None:
        self.live, self.sets = live, list(sets)

    async def list(self) -> list[FakeSet]:
        return self.sets

    async def live_release(self) -> str | None:
        return self.live


async def test_counts_on_demand_compare_with_the_live_release_set(rag: World) -> None:
    """Right after a good rollback to v1, the newest set is v2's safety snapshot (230 points): counts
    compare with v1's own set, never with that."""
    safety = FakeSet("s3", "v2", "safety snapshot before incident inc-9", 230)
    unverified = FakeSet("s2", "v1", "scheduled", 999, verified=False)
    v1 = FakeSet("s1", "v1", "scheduled", 200)
    result = await counts(rag).verify(ctx(caps=Capabilities(snapshots=Sets("v1", safety, unverified, v1))))
    assert result.verdict is Verdict.PASS, result.summary
    assert result.summary == "5 tables/collections match snapshot set s1 of the live release v1"
    wrong_sets = Sets("v1", safety, FakeSet("s0", "v1", "", 201))
    wrong = await counts(rag).verify(ctx(caps=Capabilities(snapshots=wrong_sets)))
    assert wrong.verdict is Verdict.FAIL and wrong.summary.startswith("docs: 200 live, 201 expected")
    none = await counts(rag).verify(ctx(caps=Capabilities(snapshots=Sets("v1", safety))))
    assert none.verdict is Verdict.INCONCLUSIVE and none.summary == "no manifest to compare with"


async def test_counts_are_an_error_when_the_database_is_unreachable(rag: World) -> None:
    check = CountsVerifier(
        CountsOptions.model_validate(
            {
                "type": "counts",
                "stores": {"pg": {"dsn": "postgresql://127.0.0.1:1/none"}, "qdrant": {"url": dead_url()}},
            }
        )
    )
    inc = incident_with([{"type": "data.prepare"}])
    result = await check.verify(ctx(incident=inc, outputs={"data.prepare": prepare_output(EXPECTED_TABLES, 200)}))
    assert result.verdict is Verdict.ERROR and result.summary.startswith("postgres: cannot connect")


# ---------------------------------------------------------------------------------------------- ragas_quick
def quick(url: str, **kw: Any) -> RagasQuickVerifier:
    return RagasQuickVerifier(
        RagasQuickOptions.model_validate(
            {"type": "ragas_quick", "golden": str(DATA / "golden.yaml"), "request": {"url": f"{url}/query"}, **kw}
        )
    )


async def test_ragas_quick_lexical_passes_on_good_answers(rag: World) -> None:
    result = await quick(rag.url).verify(ctx(deadline=60))
    assert result.verdict is Verdict.PASS, result.summary
    assert result.figures["questions"] == 20 and result.figures["answered"] == 20
    assert float(result.figures["faithfulness"]) >= 0.85 and float(result.figures["context_recall"]) == 1.0
    assert len(result.details["questions"]) == 20 and {"id", "faithfulness"} <= set(result.details["questions"][0])


async def test_ragas_quick_fails_on_hallucinated_answers(rag: World) -> None:
    rag.fault(answer_mode="bad")
    result = await quick(rag.url).verify(ctx(deadline=60))
    assert result.verdict is Verdict.FAIL
    assert result.summary.startswith("faithfulness 0.00 < 0.85 (worst: q01 0.00"), result.summary
    assert "answer_relevancy 0.00 < 0.78" in result.summary and "context_recall 0.00 < 0.70" in result.summary


@pytest.mark.parametrize(
    ("mode", "failing"),
    [
        ("dump", "answer_relevancy"),
        ("negate", "faithfulness"),
        ("wrong_number", "faithfulness"),
        ("echo", "answer_relevancy"),
        ("canned", "faithfulness"),
        ("foreign", "faithfulness"),
    ],
)
async def test_ragas_quick_lexical_is_not_fooled(rag: World, mode: str, failing: str) -> None:
    """The reference service games the lexical scorer: the same corpus dump for every question, negated
    answers, wrong numbers, the question echoed, canned text, another language: never PASS."""
    rag.fault(answer_mode=mode)
    result = await quick(rag.url).verify(ctx(deadline=60))
    assert result.verdict is Verdict.FAIL, result.summary
    assert f"{failing} " in result.summary and result.figures["answered"] == 20, result.summary


async def test_ragas_quick_fails_on_500s_and_errors_when_refused(rag: World) -> None:
    rag.fault(error_fraction=0.1)
    result = await quick(rag.url, concurrency=1).verify(ctx(deadline=60))
    assert result.verdict is Verdict.FAIL
    assert result.summary.startswith("2/20 questions failed (q10: HTTP 500"), result.summary
    refused = await quick(dead_url()).verify(ctx())
    assert refused.verdict is Verdict.ERROR and "connection refused" in refused.summary


async def test_ragas_quick_endpoint_scorer_reads_the_service_scores(rag: World, tmp_path: Path) -> None:
    result = await quick(rag.url, scorer={"type": "endpoint"}, limit=5).verify(ctx(deadline=60))
    assert result.verdict is Verdict.PASS, result.summary
    rag.fault(answer_mode="bad")
    bad = await quick(rag.url, scorer={"type": "endpoint"}, limit=5).verify(ctx(deadline=60))
    assert bad.verdict is Verdict.FAIL and bad.summary.startswith("faithfulness 0.00 < 0.85")
    rag.fault()
    missing = await quick(rag.url, scorer={"type": "endpoint", "paths": {"faithfulness": "nope"}}, limit=5).verify(
        ctx(deadline=60)
    )
    assert missing.verdict is Verdict.INCONCLUSIVE and "no numeric nope" in missing.summary


async def test_ragas_quick_without_questions_is_inconclusive(rag: World, tmp_path: Path) -> None:
    empty = tmp_path / "golden_empty.jsonl"
    empty.write_text("")
    result = await quick(rag.url, golden=str(empty)).verify(ctx())
    assert result.verdict is Verdict.INCONCLUSIVE and result.summary.startswith("0 golden question(s) in")


def small_golden(tmp_path: Path, n: int) -> str:
    path = tmp_path / f"golden_{n}.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load((DATA / "golden.yaml").read_text())[:n]))
    return str(path)


async def test_ragas_quick_no_pass_without_enough_answers(rag: World, tmp_path: Path) -> None:
    """0/3 answered with 3 errors tolerated, a golden set of 1 or 3, 1 of 20 answered: never PASS."""
    rag.fault(error_fraction=1.0)
    none = await quick(rag.url, golden=small_golden(tmp_path, 3), max_error_answers=3).verify(ctx(deadline=60))
    assert none.verdict is Verdict.INCONCLUSIVE, none.summary
    assert none.summary.startswith("3 golden question(s) in") and "at least 5 must be answered" in none.summary
    all_20 = await quick(rag.url, max_error_answers=20).verify(ctx(deadline=60))
    assert all_20.verdict is Verdict.INCONCLUSIVE and all_20.summary.startswith(
        "only 0/20 questions answered; 16 needed"
    ), all_20.summary
    rag.fault(error_fraction=0.95)
    one = await quick(rag.url, max_error_answers=20, concurrency=1).verify(ctx(deadline=60))
    assert one.verdict is Verdict.INCONCLUSIVE and one.summary.startswith("only 1/20 questions answered"), one.summary
    rag.fault()
    single = await quick(rag.url, golden=small_golden(tmp_path, 1)).verify(ctx(deadline=60))
    assert single.verdict is Verdict.INCONCLUSIVE and single.summary.startswith("1 golden question(s)")
    enough = await quick(rag.url, golden=small_golden(tmp_path, 5)).verify(ctx(deadline=60))
    assert enough.verdict is Verdict.PASS, enough.summary
    with pytest.raises(ValueError, match="limit 3 is below min_answered 5"):
        quick(rag.url, limit=3)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", 7.0, -0.5])
async def test_ragas_quick_endpoint_scores_out_of_range_are_an_error(rag: World, bad: Any) -> None:
    """One question scored NaN (or 7.0...) among good ones: ERROR naming it, never a mean that passes."""
    rag.fault(scores={"faithfulness": bad})
    result = await quick(rag.url, scorer={"type": "endpoint"}, limit=5).verify(ctx(deadline=60))
    assert result.verdict is Verdict.ERROR, result.summary
    assert "invalid score: q01: faithfulness = " in result.summary and "finite numbers in [0, 1]" in result.summary


# ---------------------------------------------------------------------------------------------- governance
def write_sources(tmp_path: Path, sources: list[dict[str, Any]]) -> str:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    return str(path)


async def test_governance_passes_on_the_declared_sources_and_corpus(rag: World) -> None:
    check = GovernanceVerifier(
        GovernanceOptions.model_validate(
            {"type": "governance", "sources_file": str(DATA / "sources.yaml"), "corpus": {"dsn": rag.dsn}}
        )
    )
    result = await check.verify(ctx())
    assert result.verdict is Verdict.PASS, result.summary
    assert result.summary == "3 critical of 5 sources owned and reviewed, every corpus source declared"


async def test_governance_names_a_missing_owner_an_overdue_review_and_an_undeclared_source(
    rag: World, tmp_path: Path
) -> None:
    sources = yaml.safe_load((DATA / "sources.yaml").read_text())["sources"]
    sources = [s for s in sources if s["id"] != "release-notes"]
    sources[1]["owner"] = ""  # engineering-wiki
    sources[2]["review_date"] = dt.date(2020, 1, 31)  # support-kb
    check = GovernanceVerifier(
        GovernanceOptions.model_validate(
            {"type": "governance", "sources_file": write_sources(tmp_path, sources), "corpus": {"dsn": rag.dsn}}
        )
    )
    check.today = lambda: dt.date(2026, 11, 22)  # type: ignore[method-assign]
    result = await check.verify(ctx())
    assert result.verdict is Verdict.FAIL
    assert result.summary == (
        "engineering-wiki: critical source without an owner; support-kb: review overdue "
        "since 2020-01-31 (2487 days); release-notes: found in the corpus but not declared"
    )
    assert result.figures["violations"] == 3


async def test_governance_without_a_critical_source_is_inconclusive(tmp_path: Path) -> None:
    sources = yaml.safe_load((DATA / "sources.yaml").read_text())["sources"]
    hollow = [{**s, "critical": False} for s in sources]
    check = GovernanceVerifier(GovernanceOptions(type="governance", sources_file=write_sources(tmp_path, hollow)))
    result = await check.verify(ctx())
    assert result.verdict is Verdict.INCONCLUSIVE, result.summary
    assert result.summary.startswith("no source of 5 in") and "is marked critical" in result.summary
    loose = [{**s, "critical": "no"} for s in sources]
    check = GovernanceVerifier(GovernanceOptions(type="governance", sources_file=write_sources(tmp_path, loose)))
    result = await check.verify(ctx())
    assert result.verdict is Verdict.ERROR and "`critical` must be true or false" in result.summary


async def test_governance_error_and_inconclusive(tmp_path: Path) -> None:
    missing = GovernanceVerifier(GovernanceOptions(type="governance", sources_file=str(tmp_path / "nope.yaml")))
    assert (await missing.verify(ctx())).verdict is Verdict.ERROR
    empty = GovernanceVerifier(GovernanceOptions(type="governance", sources_file=write_sources(tmp_path, [])))
    assert (await empty.verify(ctx())).verdict is Verdict.INCONCLUSIVE
    broken = GovernanceVerifier(
        GovernanceOptions.model_validate(
            {
                "type": "governance",
                "sources_file": str(DATA / "sources.yaml"),
                "corpus": {"dsn": "postgresql://127.0.0.1:1/none"},
            }
        )
    )
    result = await broken.verify(ctx())
    assert result.verdict is Verdict.ERROR and result.summary.startswith("corpus: cannot connect")


# ---------------------------------------------------------------------------------------------- alert_cleared
async def test_alert_cleared_on_demand_asks_prometheus_and_errors_when_it_is_down() -> None:
    from rollbackd.prom import Prometheus

    prom = Prometheus(dead_url(), timeout=1)
    try:
        check = AlertClearedVerifier(AlertClearedOptions(type="alert_cleared"))
        result = await check.verify(ctx(prometheus=prom, rollback_alerts=("RAGGateFailRateHigh",)))
    finally:
        await prom.close()
    assert result.verdict is Verdict.ERROR and result.summary.startswith("Prometheus: prometheus: ")
