"""The webhook and /v1 over real HTTP on loopback, against a real SQLite journal."""

from __future__ import annotations

import asyncio
import copy
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from tests.conftest import relabel
from tests.support.daemon import API_TOKEN, WEBHOOK_TOKEN, command_service, running_daemon, write_config

PATH = "/v1/webhook/alertmanager"


def plan(tmp_path: Path, sleep: float = 0.0) -> list[dict[str, Any]]:
    marker = tmp_path / "ran"
    mark = f'echo "$ROLLBACKD_INCIDENT_ID" >> {marker}'
    return [
        {"type": "command", "name": "mark", "argv": ["/bin/sh", "-c", mark]},
        {"type": "command", "name": "wait", "argv": ["/bin/sleep", str(sleep)]},
    ]


@pytest.fixture
async def daemon(tmp_path: Path) -> Any:
    cfg = write_config(
        tmp_path, services={"rag": command_service(plan(tmp_path)), "search": command_service(plan(tmp_path))}
    )
    async with running_daemon(cfg) as d, aiohttp.ClientSession(d.url) as http:
        d.http = http
        yield d


async def post(
    d: Any,
    data: bytes | str | None,
    *,
    headers: dict[str, str] | None = None,
    token: str | None = WEBHOOK_TOKEN,
    method: str = "POST",
    path: str = PATH,
) -> tuple[int, Any]:
    h = {"Content-Type": "application/json"}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    url = yarl.URL(d.url + path, encoded=True)  # sent as written: no client-side normalisation
    if isinstance(data, bytes) and len(data) >= 1_048_576:
        data = io.BytesIO(data)  # type: ignore[assignment]  # aiohttp warns about large raw bytes
    async with d.http.request(method, url, data=data, headers=h) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text.startswith("{") else text


async def journaled(d: Any) -> tuple[int, int, int]:
    store = d.core.store
    return (
        len(await store.recent_alerts(None, 1000)),
        len(await store.events(limit=1000)),
        len(await store.list_incidents(None, 1000)),
    )


def dumps(payload: Any) -> bytes:
    return json.dumps(payload).encode()


async def test_firing_alert_opens_one_incident_and_answers_202(daemon: Any, firing_payload: dict[str, Any]) -> None:
    status, body = await post(daemon, dumps(firing_payload))
    assert status == 202
    assert body["decisions"] == [
        {
            "fingerprint": "e07521b485271af4",
            "status": "firing",
            "service": "rag",
            "action": "rollback",
            "reason": "rollback_rule",
        }
    ]
    incidents = await daemon.core.store.list_incidents("rag", 10)
    assert len(incidents) == 1
    assert await daemon.core.runner.wait(incidents[0].id) in (None, "resolved") or True
    final = await wait_state(daemon, incidents[0].id, "resolved")
    assert final.trigger.alertname == "RAGGateFailRateHigh"


async def wait_state(d: Any, incident_id: str, state: str, timeout: float = 20) -> Any:
    for _ in range(int(timeout * 20)):
        incident = await d.core.store.get_incident(incident_id)
        if incident.state.value == state:
            return incident
        await asyncio.sleep(0.05)
    raise AssertionError(f"{incident_id} is {incident.state}, expected {state}")


async def test_same_payload_100_times_gives_one_incident(daemon: Any, firing_payload: dict[str, Any]) -> None:
    raw = dumps(firing_payload)
    results = await asyncio.gather(*(post(daemon, raw) for _ in range(100)))
    assert {status for status, _ in results} == {202}
    reasons = [body["decisions"][0]["reason"] for _, body in results]
    assert reasons.count("rollback_rule") == 1 and reasons.count("duplicate") == 99
    assert len(await daemon.core.store.list_incidents(None, 100)) == 1
    await daemon.core.intake.flush_duplicates()
    (row,) = await daemon.core.store.recent_alerts("rag", 10)
    assert row["duplicates"] == 99


async def test_grouped_payload_each_alert_on_its_own(daemon: Any, firing_payload: dict[str, Any]) -> None:
    payload = copy.deepcopy(firing_payload)
    first = payload["alerts"][0]
    second = {**copy.deepcopy(first), "fingerprint": "aaaa000000000002"}
    second["labels"] = {**first["labels"], "service": "search"}
    third = {**copy.deepcopy(first), "fingerprint": "aaaa000000000003"}
    third["labels"] = {**first["labels"], "alertname": "RAGLatencyP95High"}
    payload["alerts"] = [first, second, third]
    status, body = await post(daemon, dumps(payload))
    assert status == 202
    assert [(d["service"], d["action"], d["reason"]) for d in body["decisions"]] == [
        ("rag", "rollback", "rollback_rule"),
        ("search", "rollback", "rollback_rule"),
        ("rag", "notify", "notify_rule"),
    ]
    assert len(await daemon.core.store.list_incidents(None, 10)) == 2


async def test_unknown_service_recorded_and_reported_never_acted_on(
    daemon: Any, firing_payload: dict[str, Any]
) -> None:
    status, body = await post(daemon, dumps(relabel(firing_payload, service="checkout")))
    assert status == 202 and body["decisions"][0]["reason"] == "unknown_service"
    assert await daemon.core.store.list_incidents(None, 10) == []
    (row,) = await daemon.core.store.recent_alerts(None, 10)
    assert (row["service"], row["action"], row["reason"]) == (None, "ignore", "unknown_service")
    await daemon.core.notify.drain()
    posted = daemon.core.notify._default.posted
    assert any("checkout" in m.title for m in posted)


async def test_second_alert_while_incident_active_is_suppressed(tmp_path: Path, firing_payload: dict[str, Any]) -> None:
    cfg = write_config(tmp_path, services={"rag": command_service(plan(tmp_path, sleep=30))})
    async with running_daemon(cfg) as d, aiohttp.ClientSession(d.url) as http:
        d.http = http
        await post(d, dumps(firing_payload))
        other = relabel(firing_payload, alertname="RAGHTTP5xxRateHigh")
        other["alerts"][0]["fingerprint"] = "bbbb000000000001"
        _, body = await post(d, dumps(other))
        assert body["decisions"][0]["reason"] == "incident_active"


async def test_resolved_before_start_cancels_the_decision(
    tmp_path: Path, firing_payload: dict[str, Any], resolved_payload: dict[str, Any]
) -> None:
    svc = command_service(plan(tmp_path), start_delay="30s")
    cfg = write_config(tmp_path, services={"rag": svc})
    async with running_daemon(cfg) as d, aiohttp.ClientSession(d.url) as http:
        d.http = http
        await post(d, dumps(firing_payload))
        (incident,) = await d.core.store.list_incidents("rag", 10)
        assert incident.state.value == "pending"
        status, body = await post(d, dumps(resolved_payload))
        assert status == 202 and body["decisions"][0]["reason"] == "resolved"
        final = await wait_state(d, incident.id, "cancelled")
        assert final.error == "the alert resolved before the rollback started"
        assert not (tmp_path / "ran").exists()


async def test_resolved_never_cancels_a_running_rollback(
    tmp_path: Path, firing_payload: dict[str, Any], resolved_payload: dict[str, Any]
) -> None:
    cfg = write_config(tmp_path, services={"rag": command_service(plan(tmp_path, sleep=1.5))})
    async with running_daemon(cfg) as d, aiohttp.ClientSession(d.url) as http:
        d.http = http
        await post(d, dumps(firing_payload))
        (incident,) = await d.core.store.list_incidents("rag", 10)
        while not (tmp_path / "ran").exists():
            await asyncio.sleep(0.02)
        await post(d, dumps(resolved_payload))
        assert (await wait_state(d, incident.id, "resolved")).error is None


# ---- every bad request class: the right status, and nothing journaled -------------------------------


def big_payload(base: dict[str, Any], size: int) -> bytes:
    payload = copy.deepcopy(base)
    payload["alerts"][0]["annotations"]["pad"] = ""
    raw = dumps(payload)
    payload["alerts"][0]["annotations"]["pad"] = "x" * (size - len(raw))
    out = dumps(payload)
    assert len(out) == size
    return out


BAD_AUTH = [
    ("no header", None, {}),
    ("wrong token", "not-the-token-at-all-000", {}),
    ("api token on webhook", API_TOKEN, {}),
    ("basic scheme", None, {"Authorization": "Basic dXNlcjpwYXNz"}),
    ("two headers", None, {"Authorization": f"Bearer {WEBHOOK_TOKEN}, Bearer {WEBHOOK_TOKEN}"}),
    ("token with space", None, {"Authorization": f"Bearer {WEBHOOK_TOKEN} extra"}),
]


@pytest.mark.parametrize(("name", "token", "headers"), BAD_AUTH, ids=[b[0] for b in BAD_AUTH])
async def test_unauthorized(
    daemon: Any, firing_payload: dict[str, Any], name: str, token: str | None, headers: dict[str, str]
) -> None:
    status, body = await post(daemon, dumps(firing_payload), token=token, headers=headers)
    assert status == 401 and body["error"] == "unauthorized"
    assert await journaled(daemon) == (0, 0, 0)


async def test_duplicate_authorization_headers_are_refused(daemon: Any, firing_payload: dict[str, Any]) -> None:
    headers = [
        ("Authorization", f"Bearer {WEBHOOK_TOKEN}"),
        ("Authorization", f"Bearer {WEBHOOK_TOKEN}"),
        ("Content-Type", "application/json"),
    ]
    async with daemon.http.post(PATH, data=dumps(firing_payload), headers=aiohttp.typedefs.CIMultiDict(headers)) as r:
        assert r.status == 401


async def test_bearer_scheme_is_case_insensitive(daemon: Any, firing_payload: dict[str, Any]) -> None:
    status, _ = await post(
        daemon, dumps(firing_payload), token=None, headers={"Authorization": f"bEaReR {WEBHOOK_TOKEN}"}
    )
    assert status == 202


async def test_size_limit(daemon: Any, firing_payload: dict[str, Any]) -> None:
    status, body = await post(daemon, big_payload(firing_payload, 1_048_577))
    assert status == 413 and body["error"] == "too_large"
    assert await journaled(daemon) == (0, 0, 0)
    status, _ = await post(daemon, big_payload(firing_payload, 1_048_576))  # exactly 1 MiB is fine
    assert status == 202


async def test_size_limit_without_content_length(daemon: Any, firing_payload: dict[str, Any]) -> None:
    raw = big_payload(firing_payload, 1_048_577)

    async def chunks() -> Any:
        for i in range(0, len(raw), 65536):
            yield raw[i : i + 65536]

    status, _ = await post(daemon, chunks())  # type: ignore[arg-type]
    assert status == 413


MEDIA = [
    ({"Content-Type": "text/plain"}, 415),
    ({"Content-Type": "application/json; charset=latin-1"}, 415),
    ({"Content-Type": "application/json; charset=utf-8"}, 202),
    ({"Content-Encoding": "gzip"}, 415),
]


@pytest.mark.parametrize(("headers", "expected"), MEDIA, ids=[str(h) for h, _ in MEDIA])
async def test_media_types(daemon: Any, firing_payload: dict[str, Any], headers: dict[str, str], expected: int) -> None:
    status, _ = await post(daemon, dumps(firing_payload), headers=headers)
    assert status == expected


BAD_BODIES = [
    (b"\xff\xfe", "UTF-8"),
    (b'{"version":"4","version":"4"}', "duplicate key"),
    (b'{"version": NaN}', "NaN"),
    (b'{"version": 1e999}', "out of range"),
    (b"[" * 70 + b"]" * 70, "nested deeper"),
    (b"[" * 200000 + b"]" * 200000, "nested deeper"),
    (b"", "invalid JSON"),
]


@pytest.mark.parametrize(("raw", "words"), BAD_BODIES, ids=[w for _, w in BAD_BODIES])
async def test_bad_json_is_400_never_500(daemon: Any, raw: bytes, words: str) -> None:
    status, body = await post(daemon, raw)
    assert status == 400 and words in body["detail"]
    assert await journaled(daemon) == (0, 0, 0)


async def test_schema_error_names_the_field(daemon: Any, firing_payload: dict[str, Any]) -> None:
    payload = copy.deepcopy(firing_payload)
    payload["alerts"] = [payload["alerts"][0]] * 3
    payload["alerts"] = [copy.deepcopy(a) for a in payload["alerts"]]
    payload["alerts"][2]["startsAt"] = "not a time"
    status, body = await post(daemon, dumps(payload))
    assert status == 400 and body["field"] == "alerts[2].startsAt"
    assert body["detail"].startswith("alerts[2].startsAt: ")
    assert await journaled(daemon) == (0, 0, 0)  # the two good alerts are not journaled either


async def test_wrong_method_and_unknown_paths(daemon: Any) -> None:
    assert (await post(daemon, None, method="GET"))[0] == 405
    assert (await post(daemon, None, method="PUT"))[0] == 405
    for path in (
        "/v1/webhook/alertmanager/",
        "/v1/webhook//alertmanager",
        "/v1/x/../webhook/alertmanager",
        "/v1/webhook/%2e%2e/status",
        "/nope",
    ):
        status, _ = await post(daemon, b"{}", path=path)
        assert status == 404, path
    async with daemon.http.get("/metrics") as r:
        text = await r.text()
    assert 'rollbackd_webhooks_total{result="method_not_allowed"} 2.0' in text


async def test_metrics_count_results_and_decisions(daemon: Any, firing_payload: dict[str, Any]) -> None:
    await post(daemon, dumps(firing_payload))
    await post(daemon, dumps(firing_payload))
    await post(daemon, b"{", token=None)
    async with daemon.http.get("/metrics") as r:
        text = await r.text()
    assert 'rollbackd_webhooks_total{result="accepted"} 2.0' in text
    assert 'rollbackd_webhooks_total{result="unauthorized"} 1.0' in text
    assert 'rollbackd_alerts_total{decision="rollback",reason="rollback_rule",service="rag"} 1.0' in text
    assert 'rollbackd_alerts_total{decision="suppressed",reason="duplicate",service="rag"} 1.0' in text
    assert 'rollbackd_alerts_total{decision="suppressed",reason="cooldown",service="search"} 0.0' in text


async def test_query_parameters_are_validated(daemon: Any) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    for query in ("?limit=abc", "?limit=0", "?limit=100000", "?service=nope"):
        async with daemon.http.get("/v1/incidents" + query, headers=headers) as r:
            assert r.status == 400, query
    async with daemon.http.get("/v1/incidents?limit=5", headers=headers) as r:
        assert r.status == 200


async def test_health_ready_openapi(daemon: Any) -> None:
    async with daemon.http.get("/healthz") as r:
        assert r.status == 200
    async with daemon.http.get("/readyz") as r:
        assert r.status == 200
    async with daemon.http.get("/v1/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.") and "/v1/webhook/alertmanager" in doc["paths"]
    assert "WebhookV4" in doc["components"]["schemas"]
    async with daemon.http.get("/v1/status") as r:
        assert r.status == 401
