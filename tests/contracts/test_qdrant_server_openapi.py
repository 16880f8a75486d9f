"""Contract: every answer of the Qdrant test server matches Qdrant's own OpenAPI document (v1.19 excerpt).

The excerpt is kept in the repository, tests/qdrant_server/reference/openapi-subset.json (with its
README: source, version, license), so a plain clone runs this test. Each of its operations has a
scenario below that calls the server (a separate process) with requests that are themselves valid
against the document, and checks each response body against the schema declared for its status (exact
code, else 4XX/5XX, else default), errors included. OpenAPI 3.0's `nullable` is translated to JSON
Schema before validating with jsonschema's Draft 4 validator.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from tests.support.qdrant import QdrantTestServer

SPEC_PATH = Path(__file__).resolve().parents[1] / "qdrant_server" / "reference" / "openapi-subset.json"
CT = "/collections/{collection_name}"
SNAP = CT + "/snapshots"
VECTORS = {"size": 4, "distance": "Dot"}
_TRIVIAL = {"description", "default", "nullable", "deprecated", "example", "format"}


def load_spec() -> dict[str, Any]:
    if not SPEC_PATH.is_file():
        pytest.fail(f"Qdrant OpenAPI excerpt missing: expected it at {SPEC_PATH}")
    spec: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return spec


def to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema object -> JSON Schema (`nullable` becomes an explicit null alternative)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "oneOf", "allOf"):
            out[key] = to_json_schema(value)
        elif key != "nullable":
            out[key] = value
    return _with_null(node, out) if node.get("nullable") else out


def _with_null(original: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    if "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    if set(original) <= _TRIVIAL:
        return {"type": "null"}
    return {"anyOf": [out, {"type": "null"}]}


class Contract:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        schemas = spec["components"]["schemas"]
        self.components = {"schemas": {name: to_json_schema(sub) for name, sub in schemas.items()}}

    def validate(self, schema: dict[str, Any], instance: object) -> None:
        root = {"components": self.components, **to_json_schema(schema)}
        jsonschema.Draft4Validator(root).validate(instance)

    def response_schema(self, method: str, path: str, status: int) -> tuple[str, dict[str, Any]]:
        responses = self.spec["paths"][path][method.lower()]["responses"]
        declared = responses.get(str(status)) or responses.get(f"{status // 100}XX") or responses.get("default")
        assert declared is not None, f"{method} {path}: status {status} is not declared"
        content = declared.get("content")
        assert content, f"{method} {path}: status {status} declares no body"
        ctype, media = next(iter(content.items()))
        return ctype, media["schema"]

    def request_schema(self, method: str, path: str) -> dict[str, Any]:
        body = self.spec["paths"][path][method.lower()]["requestBody"]["content"]
        schema: dict[str, Any] = next(iter(body.values()))["schema"]
        return schema


class Caller:
    """Calls one operation, checks the request and the response against the document."""

    def __init__(self, contract: Contract, session: aiohttp.ClientSession, url: str) -> None:
        self.contract, self.session, self.url = contract, session, url

    async def call(
        self,
        method: str,
        path: str,
        expect: int,
        *,
        params: dict[str, str] | None = None,
        body: object = None,
        form: aiohttp.FormData | None = None,
        bad_body: bool = False,
        **names: str,
    ) -> Any:
        if body is not None and bad_body:  # a body the document itself rejects
            with pytest.raises(jsonschema.ValidationError):
                self.contract.validate(self.contract.request_schema(method, path), body)
        elif body is not None:
            self.contract.validate(self.contract.request_schema(method, path), body)
        url = self.url + path.format(**names)
        async with self.session.request(method, url, params=params, json=body, data=form) as response:
            raw = await response.read()
            assert response.status == expect, f"{method} {url}: {response.status} {raw[:300]!r}"
            ctype, schema = self.contract.response_schema(method, path, response.status)
            assert response.content_type == ctype, f"{method} {url}: {response.content_type} != {ctype}"
        if ctype == "application/octet-stream":
            return raw
        decoded: Any = json.loads(raw) if ctype == "application/json" else raw.decode()
        self.contract.validate(schema, decoded)
        if expect >= 400:  # README: errors are {"status": {"error": msg}, "time": seconds}
            assert isinstance(decoded["status"]["error"], str) and decoded["status"]["error"]
            assert isinstance(decoded["time"], float)
        elif ctype == "application/json" and expect == 200 and path != "/":
            assert decoded["status"] == "ok" and "result" in decoded and isinstance(decoded["time"], float)
        return decoded


OPERATIONS = [
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/collections"),
    ("GET", CT),
    ("PUT", CT),
    ("DELETE", CT),
    ("GET", CT + "/exists"),
    ("POST", "/collections/aliases"),
    ("GET", CT + "/aliases"),
    ("GET", "/aliases"),
    ("GET", SNAP),
    ("POST", SNAP),
    ("GET", SNAP + "/{snapshot_name}"),
    ("DELETE", SNAP + "/{snapshot_name}"),
    ("POST", SNAP + "/upload"),
    ("PUT", SNAP + "/recover"),
    ("PUT", CT + "/points"),
    ("POST", CT + "/points/count"),
    ("POST", CT + "/points/scroll"),
]


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract(load_spec())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QdrantTestServer]:
    with QdrantTestServer(tmp_path_factory.mktemp("qdrant-contract")) as qdrant:
        yield qdrant


@pytest.fixture
async def api(contract: Contract, server: QdrantTestServer) -> AsyncIterator[Caller]:
    async with aiohttp.ClientSession() as session:
        yield Caller(contract, session, server.url)


async def make_collection(api: Caller, name: str, points: int = 3) -> None:
    await api.call("PUT", CT, 200, body={"vectors": VECTORS}, collection_name=name)
    if points:
        batch = {"points": [{"id": i, "vector": [1.0, 0.5, 0.25, i], "payload": {"k": i % 2}} for i in range(points)]}
        await api.call("PUT", CT + "/points", 200, params={"wait": "true"}, body=batch, collection_name=name)


def test_document_covers_exactly_these_operations(contract: Contract) -> None:
    declared = {(m.upper(), p) for p, ops in contract.spec["paths"].items() for m in ops}
    assert declared == set(OPERATIONS)
    assert len(contract.spec["paths"]) == 16


async def test_service_endpoints(api: Caller) -> None:
    version = await api.call("GET", "/", 200)
    assert version["version"].startswith("1.19")
    assert await api.call("GET", "/healthz", 200) == "healthz check passed"
    assert await api.call("GET", "/readyz", 200) == "all shards are ready"


async def test_collection_operations(api: Caller) -> None:
    await make_collection(api, "c_ops", points=0)
    listed = await api.call("GET", "/collections", 200)
    assert {"name": "c_ops"} in listed["result"]["collections"]
    info = await api.call("GET", CT, 200, collection_name="c_ops")
    assert info["result"]["config"]["params"]["vectors"] == VECTORS
    await api.call("GET", CT, 404, collection_name="c_missing")
    await api.call("PUT", CT, 409, body={"vectors": VECTORS}, collection_name="c_ops")
    await api.call("PUT", CT, 422, body={"vectors": VECTORS}, collection_name="bad:name")
    await api.call(
        "PUT", CT, 400, body={"vectors": {"size": 4, "distance": "Hamming"}}, bad_body=True, collection_name="c_x"
    )
    assert (await api.call("GET", CT + "/exists", 200, collection_name="c_ops"))["result"] == {"exists": True}
    assert (await api.call("DELETE", CT, 200, collection_name="c_ops"))["result"] is True
    assert (await api.call("DELETE", CT, 200, collection_name="c_ops"))["result"] is False
    assert (await api.call("GET", CT + "/exists", 200, collection_name="c_ops"))["result"] == {"exists": False}


async def test_alias_operations(api: Caller) -> None:
    await make_collection(api, "a_v1", points=0)
    path = "/collections/aliases"
    create = {"actions": [{"create_alias": {"collection_name": "a_v1", "alias_name": "a_live"}}]}
    assert (await api.call("POST", path, 200, body=create))["result"] is True
    rename = {"actions": [{"rename_alias": {"old_alias_name": "a_live", "new_alias_name": "a_live2"}}]}
    await api.call("POST", path, 200, body=rename)
    await api.call("POST", path, 200, body={"actions": [{"delete_alias": {"alias_name": "a_nope"}}]})
    onto_missing = {"actions": [{"create_alias": {"collection_name": "a_nope", "alias_name": "a_x"}}]}
    await api.call("POST", path, 404, body=onto_missing)
    onto_collection = {"actions": [{"create_alias": {"collection_name": "a_v1", "alias_name": "a_v1"}}]}
    await api.call("POST", path, 409, body=onto_collection)
    await api.call("POST", path, 400, body={"actions": "nope"}, bad_body=True)
    aliases = await api.call("GET", CT + "/aliases", 200, collection_name="a_v1")
    assert aliases["result"]["aliases"] == [{"alias_name": "a_live2", "collection_name": "a_v1"}]
    everything = await api.call("GET", "/aliases", 200)
    assert {"alias_name": "a_live2", "collection_name": "a_v1"} in everything["result"]["aliases"]


async def test_point_operations(api: Caller) -> None:
    await make_collection(api, "p_ops", points=5)
    count = await api.call("POST", CT + "/points/count", 200, body={"exact": True}, collection_name="p_ops")
    assert count["result"] == {"count": 5}
    flt = {"must": [{"key": "k", "match": {"value": 1}}]}
    count = await api.call("POST", CT + "/points/count", 200, body={"filter": flt}, collection_name="p_ops")
    assert count["result"] == {"count": 2}
    page = await api.call(
        "POST",
        CT + "/points/scroll",
        200,
        collection_name="p_ops",
        body={"limit": 2, "offset": 1, "with_payload": True, "with_vector": True},
    )
    assert [p["id"] for p in page["result"]["points"]] == [1, 2] and page["result"]["next_page_offset"] == 3
    await api.call("POST", CT + "/points/scroll", 422, body={"limit": 0}, bad_body=True, collection_name="p_ops")
    await api.call("POST", CT + "/points/count", 404, body={}, collection_name="p_missing")
    bad_dim = {"points": [{"id": 9, "vector": [1.0]}]}
    await api.call("PUT", CT + "/points", 400, body=bad_dim, collection_name="p_ops")
    await api.call("PUT", CT + "/points", 404, body=bad_dim, collection_name="p_missing")
    batch = {"batch": {"ids": [10, 11], "vectors": [[0.0, 1, 2, 3], [1.0, 2, 3, 4]], "payloads": None}}
    result = await api.call("PUT", CT + "/points", 200, body=batch, collection_name="p_ops")
    assert result["result"]["status"] == "acknowledged"


async def test_snapshot_list_create_download_delete(api: Caller, server: QdrantTestServer) -> None:
    await make_collection(api, "s_ops")
    created = (await api.call("POST", SNAP, 200, params={"wait": "true"}, collection_name="s_ops"))["result"]
    listed = await api.call("GET", SNAP, 200, collection_name="s_ops")
    assert created in listed["result"]
    raw = await api.call("GET", SNAP + "/{snapshot_name}", 200, collection_name="s_ops", snapshot_name=created["name"])
    assert hashlib.sha256(raw).hexdigest() == created["checksum"] and len(raw) == created["size"]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert "config.json" in tar.getnames()
    await api.call("GET", SNAP + "/{snapshot_name}", 404, collection_name="s_ops", snapshot_name="none.snapshot")
    await api.call("GET", SNAP, 404, collection_name="s_missing")
    await api.call("POST", SNAP, 404, collection_name="s_missing")
    await api.call("DELETE", SNAP + "/{snapshot_name}", 200, collection_name="s_ops", snapshot_name=created["name"])
    await api.call("DELETE", SNAP + "/{snapshot_name}", 404, collection_name="s_ops", snapshot_name=created["name"])
    await api.call("POST", SNAP, 202, params={"wait": "false"}, collection_name="s_ops")


def _form(data: bytes, name: str = "upload.snapshot") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("snapshot", data, filename=name, content_type="application/octet-stream")
    return form


async def test_snapshot_upload_and_recover(api: Caller, server: QdrantTestServer) -> None:
    await make_collection(api, "r_src", points=4)
    created = (await api.call("POST", SNAP, 200, collection_name="r_src"))["result"]
    raw = await api.call("GET", SNAP + "/{snapshot_name}", 200, collection_name="r_src", snapshot_name=created["name"])
    good = {"priority": "snapshot", "checksum": created["checksum"], "wait": "true"}
    await api.call("POST", SNAP + "/upload", 200, params=good, form=_form(raw), collection_name="r_up")
    wrong = dict(good, checksum="0" * 64)
    await api.call("POST", SNAP + "/upload", 400, params=wrong, form=_form(raw), collection_name="r_up2")
    await api.call(
        "POST", SNAP + "/upload", 400, params=dict(good, priority="first"), form=_form(raw), collection_name="r_up2"
    )
    await api.call(
        "POST",
        SNAP + "/upload",
        500,
        params={"priority": "snapshot"},
        form=_form(b"not a tar"),
        collection_name="r_up2",
    )
    await api.call("POST", SNAP + "/upload", 202, params={"wait": "false"}, form=_form(raw), collection_name="r_up3")
    location = f"file://{server.snapshots_dir}/r_src/{created['name']}"
    recover = {"location": location, "priority": "snapshot", "checksum": created["checksum"]}
    await api.call("PUT", SNAP + "/recover", 200, body=recover, collection_name="r_file")
    http = dict(recover, location=f"{server.url}/collections/r_src/snapshots/{created['name']}")
    await api.call("PUT", SNAP + "/recover", 200, body=http, collection_name="r_http")
    await api.call("PUT", SNAP + "/recover", 400, body=dict(recover, checksum="f" * 64), collection_name="r_x")
    await api.call("PUT", SNAP + "/recover", 422, body=dict(recover, checksum="abc"), collection_name="r_x")
    await api.call("PUT", SNAP + "/recover", 403, body={"location": "file:///etc/hostname"}, collection_name="r_x")
    for name in ("r_up", "r_file", "r_http"):
        count = await api.call("POST", CT + "/points/count", 200, body={}, collection_name=name)
        assert count["result"]["count"] == 4
    assert (await api.call("GET", CT + "/exists", 200, collection_name="r_up2"))["result"]["exists"] is False


async def test_unauthorized_answers_as_qdrant_does(contract: Contract, tmp_path: Path) -> None:
    """Qdrant's auth middleware answers 401 in plain text (src/actix/auth.rs), outside its own document."""
    with QdrantTestServer(tmp_path / "q", api_key="secret") as qdrant:
        async with aiohttp.ClientSession() as session:
            caller = Caller(contract, session, qdrant.url)
            await caller.call("GET", "/readyz", 200)
            await caller.call("GET", "/", 200)
            async with session.get(qdrant.url + "/collections") as response:
                assert response.status == 401
                assert await response.text() == "Must provide an API key or an Authorization bearer token"
            async with session.get(qdrant.url + "/collections", headers={"api-key": "wrong"}) as response:
                assert (response.status, await response.text()) == (401, "Invalid API key or JWT")
        async with aiohttp.ClientSession(headers={"api-key": "secret"}) as session:
            await Caller(contract, session, qdrant.url).call("GET", "/collections", 200)
