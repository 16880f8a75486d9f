"""The HTTP application: /query, /healthz, /version, /metrics and the fault-injection admin routes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .faults import Fault
from .metrics import GATE, GOVERNANCE_KINDS, Metrics
from .retrieval import Doc, Hit, bad_answer, gamed_answer, good_answer, lexical_scores, retrieve
from .settings import Settings
from .store import Store, Unavailable

log = logging.getLogger("ragservice")

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)


@dataclass
class State:
    fault: Fault = field(default_factory=Fault)


STATE = web.AppKey("state", State)

UNCOUNTED_PREFIXES = ("/metrics", "/admin")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """rag_http_requests_total and the latency histogram, for every route but /metrics and /admin/*."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    if route.startswith(UNCOUNTED_PREFIXES):
        return await handler(request)
    metrics = request.app[METRICS]
    start = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as exc:
        code = exc.status
        raise
    finally:
        metrics.http_requests.labels(route, str(code)).inc()
        metrics.http_duration.labels(route).observe(time.perf_counter() - start)


async def _read_question(request: web.Request) -> tuple[str, int]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body: invalid JSON: {exc}"}), content_type="application/json"
        ) from exc
    question = body.get("question") if isinstance(body, dict) else None
    top_k = body.get("top_k", 3) if isinstance(body, dict) else 3
    if not isinstance(question, str) or not question.strip() or len(question) > 2000:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "question: expected a non-empty string"}), content_type="application/json"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 10:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "top_k: expected an integer 1..10"}), content_type="application/json"
        )
    return question, top_k


async def query(request: web.Request) -> web.Response:
    settings, store, metrics = request.app[SETTINGS], request.app[STORE], request.app[METRICS]
    fault = request.app[STATE].fault
    question, k = await _read_question(request)
    if fault.error.hit():
        return _json({"error": "injected fault"}, 500)
    mode = fault.answer_mode or settings.mode
    try:
        docs: list[Doc] = await store.candidates(question)
        if mode == "bad":
            known = {d.id for d in docs}
            docs += [d for d in await store.some_docs(k + 3) if d.id not in known]
    except Unavailable as exc:
        return _json({"error": str(exc)}, 503)
    hits = retrieve(question, docs, k=k, mode="bad" if mode == "bad" else "good")
    started = time.perf_counter()
    if delay := settings.provider_latency_s + fault.latency_s:
        await asyncio.sleep(delay)
    if mode == "dump":  # the same pile of documents, as answer and contexts, whatever the question
        hits = [Hit(d, 0.0) for d in await store.some_docs(20)]
    answer = (
        good_answer(question, hits)
        if mode == "good"
        else bad_answer(question)
        if mode == "bad"
        else gamed_answer(mode, question, hits, [h.doc for h in hits])
    )
    metrics.provider_duration.labels(settings.provider).observe(time.perf_counter() - started)
    gate = "fail" if fault.gate.hit() else "pass"
    metrics.gate_checks.labels(GATE, gate).inc()
    contexts = [h.doc.text for h in hits]
    scores = {**lexical_scores(question, answer, contexts), **fault.scores}
    metrics.observe_quality(scores)
    metrics.retrieval_top_score.observe(hits[0].score if hits else 0.0)
    if settings.record_conversations:
        try:
            await store.record(question, answer)
        except Unavailable as exc:
            log.warning("conversation not recorded: %s", exc)
    return _json(
        {
            "answer": answer,
            "contexts": [
                {
                    "id": h.doc.id,
                    "title": h.doc.title,
                    "text": h.doc.text,
                    "source": h.doc.source,
                    "score": round(h.score, 4),
                }
                for h in hits
            ],
            "sources": [h.doc.id for h in hits],
            "scores": {**{m: round(v, 4) for m, v in scores.items()}, "top": round(hits[0].score, 4) if hits else 0},
            "gates": {GATE: gate},
            "version": settings.version,
            "mode": mode,
        }
    )


async def healthz(request: web.Request) -> web.Response:
    settings, store = request.app[SETTINGS], request.app[STORE]
    body: dict[str, Any] = {"version": settings.version, "postgres": "ok", "qdrant": "ok"}
    failed = []
    try:
        await store.ping_postgres()
    except Unavailable as exc:
        body["postgres"] = str(exc)
        failed.append("postgres")
    if not settings.qdrant_url:
        body["qdrant"] = "disabled (RAG_QDRANT_URL not set)"
    else:
        try:
            body["points"] = await store.qdrant_points()
        except Unavailable as exc:
            body["qdrant"] = str(exc)
            failed.append("qdrant")
    body["status"] = "unavailable" if failed else "ok"
    if failed:
        body["reason"] = "; ".join(f"{name}: {body[name]}" for name in failed)
    return _json(body, 503 if failed else 200)


async def version(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    fault = request.app[STATE].fault
    return _json({"version": settings.version, "mode": fault.answer_mode or settings.mode})


def governance_counts(sources_file: str, today: dt.date) -> dict[str, int]:
    """Critical sources without an owner / with a review_date in the past, from a `sources:` YAML file."""
    import yaml

    counts = dict.fromkeys(GOVERNANCE_KINDS, 0)
    with open(sources_file, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    for src in doc.get("sources") or []:
        if not src.get("critical"):
            continue
        if not str(src.get("owner") or "").strip():
            counts["missing_owner"] += 1
        review = src.get("review_date")
        if isinstance(review, str):
            review = dt.date.fromisoformat(review)
        if not isinstance(review, dt.date) or review < today:
            counts["review_overdue"] += 1
    return counts


async def metrics_handler(request: web.Request) -> web.Response:
    settings, store, metrics = request.app[SETTINGS], request.app[STORE], request.app[METRICS]
    fault = request.app[STATE].fault
    if settings.qdrant_url:
        try:
            metrics.collection_points.labels(settings.qdrant_collection).set(await store.qdrant_points())
        except Unavailable:
            metrics.collection_points.clear()
    counts = dict.fromkeys(GOVERNANCE_KINDS, 0)
    if settings.sources_file:
        try:
            counts = governance_counts(settings.sources_file, dt.date.today())
        except (OSError, ValueError) as exc:
            log.warning("sources file unreadable: %s", exc)
    for kind in GOVERNANCE_KINDS:
        metrics.governance_violations.labels(kind).set(counts[kind] + fault.governance.get(kind, 0))
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def set_fault(request: web.Request) -> web.Response:
    try:
        fault = Fault.from_json(await request.json())
    except ValueError as exc:
        return _json({"error": str(exc)}, 400)
    request.app[STATE].fault = fault
    log.warning("fault injected: %s", fault.to_json())
    return _json({"fault": fault.to_json()})


async def get_fault(request: web.Request) -> web.Response:
    return _json({"fault": request.app[STATE].fault.to_json()})


async def clear_fault(request: web.Request) -> web.Response:
    request.app[STATE].fault = Fault()
    return _json({"fault": None})


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[STORE].start()
    yield
    await app[STORE].close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[count_requests], client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[STORE] = Store(settings)
    app[METRICS] = Metrics(version=settings.version, mode=settings.mode, ragas_window=settings.ragas_window)
    app[STATE] = State()
    app.cleanup_ctx.append(_store_ctx)
    app.router.add_post("/query", query)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_post("/admin/fault", set_fault)
    app.router.add_get("/admin/fault", get_fault)
    app.router.add_delete("/admin/fault", clear_fault)
    return app
