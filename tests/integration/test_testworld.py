"""The test world itself: Postgres databases, the corpus, the Podman API, the images, the RAG service.

Timings are printed (run with -s to see them), never asserted.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import docker
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.ragservice import retrieval
from tests.support import corpus, images, pg
from tests.support.pg import pg_dsn as pg_dsn
from tests.support.podman import LABEL, PID_LABEL, PodmanService
from tests.support.podman import podman as podman
from tests.support.qdrant import QdrantTestServer
from tests.support.qdrant import qdrant_server as qdrant_server

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
CONTRACT_SAMPLES = (
    "rag_http_requests_total",
    "rag_http_request_duration_seconds_bucket",
    "rag_provider_request_duration_seconds_bucket",
    "rag_gate_checks_total",
    "rag_ragas_score",
    "rag_ragas_window_queries",
    "rag_retrieval_top_score_bucket",
    "rag_collection_points",
    "rag_governance_violations",
)
GOLDEN_Q = "How wide is the Heron telescope mirror and where was it polished?"


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
async def corpus_dsn(pg_dsn: str) -> str:
    await corpus.create_corpus(pg_dsn)
    return pg_dsn


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def ask(http: aiohttp.ClientSession, base: str, question: str = GOLDEN_Q) -> tuple[int, Any]:
    async with http.post(f"{base}/query", json={"question": question}) as resp:
        return resp.status, await resp.json()


async def samples(http: aiohttp.ClientSession, base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


# ----------------------------------------------------------------------------- Postgres and corpus
async def test_fresh_database_is_created_and_dropped_with_its_rollback_copies() -> None:
    dsn = await pg.fresh_database("tw")
    name = pg.db_name(dsn)
    try:
        assert await pg.database_exists(name)
        conn = await asyncpg.connect(dsn)
        await conn.close()
        admin = await pg.admin_connect()
        try:
            await admin.execute(f'CREATE DATABASE "{name}__rb_1"')
        finally:
            await admin.close()
        holder = await asyncpg.connect(dsn)  # a connected backend must not block the drop
    finally:
        dropped = await pg.drop_database(dsn)
    holder.terminate()
    assert sorted(dropped) == sorted([name, f"{name}__rb_1"])
    assert not await pg.database_exists(name)
    assert not await pg.database_exists(f"{name}__rb_1")


async def test_corpus_golden_and_sources_fit_together(pg_dsn: str) -> None:
    counts = await corpus.create_corpus(pg_dsn, docs=200, seed=1)
    assert counts == {"docs": 200, "chunks": 200, "conversations": 25, "schema_version": 1}
    golden = yaml.safe_load((DATA / "golden.yaml").read_text())
    assert golden == corpus.golden() and len(golden) == 20
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT id, title, body, source FROM docs ORDER BY id")
        assert await conn.fetchval("SELECT version FROM schema_version") == 1
    finally:
        await conn.close()
    docs = [retrieval.Doc(r["id"], r["title"], r["body"], r["source"]) for r in rows]
    assert docs == corpus.corpus_docs(200, 1)
    declared = {s["id"] for s in yaml.safe_load((DATA / "sources.yaml").read_text())["sources"]}
    assert {d.source for d in docs} <= declared
    assert all(g["sources"][0] in {d.id for d in docs} for g in golden)

    def mean_scores(mode: str) -> dict[str, float]:
        rows: list[dict[str, float]] = []
        for g in golden:
            hits = retrieval.retrieve(g["question"], docs, mode=mode)
            ctx = [h.doc.text for h in hits]
            answer = (
                retrieval.good_answer(g["question"], hits) if mode == "good" else retrieval.bad_answer(g["question"])
            )
            rows.append(
                {
                    **retrieval.lexical_scores(g["question"], answer, ctx),
                    "recall_vs_truth": retrieval.recall_against(g["ground_truth"], ctx),
                }
            )
        return {k: statistics.mean(r[k] for r in rows) for k in rows[0]}

    good, bad = mean_scores("good"), mean_scores("bad")
    print(f"\nlexical scores over the golden set: good={good} bad={bad}")
    assert good["faithfulness"] >= 0.95 and good["answer_relevancy"] >= 0.85 and good["recall_vs_truth"] >= 0.9
    assert bad["faithfulness"] <= 0.1 and bad["answer_relevancy"] <= 0.1 and bad["recall_vs_truth"] <= 0.4


async def test_change_corpus_and_generate_large(pg_dsn: str) -> None:
    await corpus.create_corpus(pg_dsn)
    changed = await corpus.change_corpus(pg_dsn)
    assert len(changed["deleted"]) == 10 and changed["schema_version"] == 2
    assert changed["counts"]["docs"] == 200 - 10 + 40
    assert changed["counts"]["conversations"] == 25  # the history is not the bad deploy's to touch
    started = time.monotonic()
    size = await corpus.generate_large(pg_dsn, target_mb=40)
    print(f"\ngenerate_large: {size / 2**20:.0f} MB in {time.monotonic() - started:.1f} s")
    assert size >= 40 * 2**20


async def test_load_points_through_an_alias(
    corpus_dsn: str, qdrant_server: QdrantTestServer, http: aiohttp.ClientSession
) -> None:
    count = await corpus.load_points(qdrant_server.url, "docs__v1", dsn=corpus_dsn, alias="docs")
    assert count == 200
    status, body = await get_json(http, f"{qdrant_server.url}/collections/docs")
    assert status == 200 and body["result"]["points_count"] == 200
    assert corpus.point_vector("doc-0001", 64) == corpus.point_vector("doc-0001", 64)


# ----------------------------------------------------------------------------- Podman and images
def test_podman_service_answers_the_docker_api(podman: PodmanService) -> None:
    client = podman.client()
    assert client.ping()
    assert client.version()["ApiVersion"]
    assert podman.docker_host.startswith("unix://")
    assert podman.env["CONTAINERS_CONF"] == str(podman.conf_path)
    assert "nproc=20000:20000" in podman.conf_path.read_text()


def test_web_images_serve_version_and_health_and_stop_on_sigterm(podman: PodmanService) -> None:
    v1 = images.build_web_image(
        podman,
        images.session_tag(podman, "web", "v1"),
        version="v1",
        healthy=True,
        env={"RAG_VERSION": "v1", "MODEL": "small"},
        labels={"app.tier": "web"},
    )
    v2 = images.build_web_image(
        podman,
        images.session_tag(podman, "web", "v2"),
        version="v2",
        healthy=False,
        env={"RAG_VERSION": "v2", "MODEL": "big"},
    )
    assert v1 != v2 and v1.startswith("sha256:")
    image = podman.client().images.get(v1)
    assert image.id == v1 and image.tags == [f"localhost/{images.session_tag(podman, 'web', 'v1')}"]
    ports = {v1: images.free_port(), v2: images.free_port()}
    containers = {}
    for image_id, port in ports.items():
        kwargs = images.web_container_kwargs(podman, port=port)
        containers[image_id] = images.start_container(podman, image_id, environment={"USER_SET": "1"}, **kwargs)
    assert images.wait_http(f"http://127.0.0.1:{ports[v1]}/version") == b"v1\n"
    assert images.wait_http(f"http://127.0.0.1:{ports[v1]}/health") == b"ok\n"
    assert images.wait_http(f"http://127.0.0.1:{ports[v2]}/version") == b"v2\n"
    images.wait_http(f"http://127.0.0.1:{ports[v2]}/health", status=404)

    c1 = containers[v1]
    c1.reload()
    env = dict(e.split("=", 1) for e in c1.attrs["Config"]["Env"])
    assert env["RAG_VERSION"] == "v1" and env["MODEL"] == "small" and env["USER_SET"] == "1"  # merged
    assert c1.attrs["Config"]["Labels"]["app.version"] == "v1"
    assert c1.attrs["Image"] == v1 or c1.image.id == v1
    for image_id, container in containers.items():
        started = time.monotonic()
        container.stop(timeout=10)
        print(f"\nstop of web {image_id[7:19]}: {time.monotonic() - started:.2f} s")
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0  # the trap ran: not a SIGKILL after the timeout


def test_leftovers_of_a_killed_session_are_reaped(podman: PodmanService) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the "killed" session
    tag = f"rbt-{gone.pid}-dead00-web:v1"
    image_id = images.build_web_image(podman, tag, version="v1")
    labels = {LABEL: f"{gone.pid}-dead00", PID_LABEL: str(gone.pid)}
    leftover = podman.client().containers.create(image_id, name=f"rbt-{gone.pid}-dead00-c-1", labels=labels)
    removed = podman.reap_stale()
    assert f"rbt-{gone.pid}-dead00-c-1" in removed and f"localhost/{tag}" in removed
    with pytest.raises(docker.errors.NotFound):
        podman.client().containers.get(leftover.id)


# ----------------------------------------------------------------------------- the RAG service
async def check_rag_service(http: aiohttp.ClientSession, base: str, *, version: str) -> None:
    """What every running RAG service must show: health, version, a grounded answer, the metric contract."""
    status, health = await get_json(http, f"{base}/healthz")
    assert status == 200, health
    assert health["postgres"] == "ok" and health["points"] == 200
    assert await get_json(http, f"{base}/version") == (200, {"version": version, "mode": "good"})
    status, body = await ask(http, base)
    assert status == 200, body
    assert body["sources"][0] == "doc-0001" and body["contexts"][0]["id"] == "doc-0001"
    assert "four meters wide" in body["answer"] and body["gates"] == {"grounding": "pass"}
    names = {name for name, _ in await samples(http, base)}
    assert set(CONTRACT_SAMPLES) <= names, set(CONTRACT_SAMPLES) - names


async def test_rag_service_subprocess_contract_and_deterministic_faults(
    corpus_dsn: str, qdrant_server: QdrantTestServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await corpus.load_points(qdrant_server.url, "docs__v1", dsn=corpus_dsn, alias="docs")
    env = {
        "RAG_PG_DSN": corpus_dsn,
        "RAG_QDRANT_URL": qdrant_server.url,
        "RAG_QDRANT_COLLECTION": "docs",
        "RAG_VERSION": "v1",
        "RAG_SOURCES_FILE": str(DATA / "sources.yaml"),
    }
    service = images.RagServiceProcess(env=env)
    await asyncio.to_thread(service.start)
    try:
        base = service.url
        await check_rag_service(http, base, version="v1")
        before = await samples(http, base)
        assert value(before, "rag_collection_points", collection="docs") == 200
        assert value(before, "rag_governance_violations", kind="review_overdue") == 0

        async with http.post(f"{base}/admin/fault", json={"gate_fail_fraction": 0.09}) as resp:
            assert resp.status == 200
        gates = [(await ask(http, base))[1]["gates"]["grounding"] for _ in range(100)]
        after = await samples(http, base)
        assert gates.count("fail") == 9
        fails = value(after, "rag_gate_checks_total", gate="grounding", result="fail") - value(
            before, "rag_gate_checks_total", gate="grounding", result="fail"
        )
        assert fails == 9

        async with http.post(f"{base}/admin/fault", json={"error_fraction": 0.03, "answer_mode": "bad"}) as resp:
            assert resp.status == 200
        results = [await ask(http, base) for _ in range(100)]
        assert [s for s, _ in results].count(500) == 3
        _, bad = next(r for r in results if r[0] == 200)
        context_words = set().union(*(retrieval.tokens(c["text"]) for c in bad["contexts"]))
        assert not retrieval.tokens(bad["answer"]) & context_words  # hallucinated
        assert bad["sources"][:1] != ["doc-0001"]

        async with http.delete(f"{base}/admin/fault") as resp:
            assert resp.status == 200
        async with http.post(f"{base}/admin/fault", json={"gate_fail_fraction": 2}) as resp:
            assert resp.status == 400
        status, body = await ask(http, base)
        assert status == 200 and body["mode"] == "good"
    finally:
        took = await asyncio.to_thread(service.stop)
        print(f"\nsubprocess RAG service exited {service.returncode} {took:.2f} s after SIGTERM")
    assert service.returncode == 0


async def test_rag_service_reports_a_missing_qdrant_or_database(corpus_dsn: str, http: aiohttp.ClientSession) -> None:
    dead = f"http://127.0.0.1:{images.free_port()}"
    with images.RagServiceProcess(env={"RAG_PG_DSN": corpus_dsn, "RAG_QDRANT_URL": dead}) as service:
        status, health = await get_json(http, f"{service.url}/healthz")
        assert status == 503 and health["postgres"] == "ok" and "qdrant" in health["reason"]
        status, body = await ask(http, service.url)  # answers come from Postgres alone
        assert status == 200 and body["sources"][0] == "doc-0001"
    missing_db = pg.dsn_for("rbt_no_such_database")
    with images.RagServiceProcess(env={"RAG_PG_DSN": missing_db}) as service:
        status, health = await get_json(http, f"{service.url}/healthz")
        assert status == 503 and health["qdrant"].startswith("disabled") and "postgres" in health["reason"]


async def test_rag_service_reads_the_swapped_database_after_a_rename_swap(
    corpus_dsn: str, http: aiohttp.ClientSession
) -> None:
    """What data.swap does: the service's pooled connections are terminated, the next query reads the new
    database under the same name, without a failed request."""
    name = pg.db_name(corpus_dsn)
    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
    with images.RagServiceProcess(env={"RAG_PG_DSN": corpus_dsn}) as service:
        assert (await ask(http, service.url))[1]["sources"][0] == "doc-0001"
        admin = await pg.admin_connect()
        try:
            await admin.execute(terminate, name)
            await admin.execute(f'CREATE DATABASE "{name}__rb_1" TEMPLATE "{name}"')
            copy = await asyncpg.connect(pg.dsn_for(f"{name}__rb_1"))
            await copy.execute("DELETE FROM docs WHERE id = 'doc-0001'")
            await copy.close()
            await admin.execute(terminate, name)
            await admin.execute(f'ALTER DATABASE "{name}" RENAME TO "{name}__pre_1"')
            await admin.execute(f'ALTER DATABASE "{name}__rb_1" RENAME TO "{name}"')
        finally:
            await admin.close()
        status, body = await ask(http, service.url)
        assert status == 200, body
        assert "doc-0001" not in body["sources"]


async def test_rag_service_in_a_podman_container(
    podman: PodmanService, corpus_dsn: str, qdrant_server: QdrantTestServer, http: aiohttp.ClientSession
) -> None:
    await corpus.load_points(qdrant_server.url, "docs__v1", dsn=corpus_dsn, alias="docs")
    image_id = await asyncio.to_thread(
        images.build_rag_image, podman, images.session_tag(podman, "rag", "v1"), version="v1", env={"MODEL": "small"}
    )
    port = images.free_port()
    kwargs = images.rag_container_kwargs(
        podman, port=port, pg_dsn=corpus_dsn, qdrant_url=qdrant_server.url, self_traffic_rps=20
    )
    started = time.monotonic()
    container = await asyncio.to_thread(images.start_container, podman, image_id, name=podman.name("rag"), **kwargs)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(images.wait_http, f"{base}/healthz", timeout=30)
        print(f"\nRAG container healthy {time.monotonic() - started:.2f} s after create")
        await check_rag_service(http, base, version="v1")
        for _ in range(100):  # self traffic moves the counters with no client of ours
            synthetic = value(await samples(http, base), "rag_gate_checks_total", gate="grounding", result="pass")
            if synthetic > 5:
                break
            await asyncio.sleep(0.1)
        assert synthetic > 5
        await asyncio.to_thread(container.reload)
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert env["RAG_VERSION"] == "v1" and env["MODEL"] == "small" and env["RAG_PORT"] == str(port)
    finally:
        logs = (await asyncio.to_thread(container.logs)).decode(errors="replace")
        stop_started = time.monotonic()
        await asyncio.to_thread(container.stop, timeout=10)
        print(f"RAG container stopped {time.monotonic() - stop_started:.2f} s after SIGTERM")
    await asyncio.to_thread(container.reload)
    assert container.attrs["State"]["ExitCode"] == 0, logs
    await asyncio.to_thread(container.remove)
