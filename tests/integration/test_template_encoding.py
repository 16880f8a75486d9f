"""Template values are encoded for where they land: a label cannot add a path segment, a query parameter,
a header or a JSON key; a release version cannot change the deploy URL."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest

from rollbackd.deploy.http import HttpDeployer
from rollbackd.errors import FatalError
from rollbackd.plan import StepContext, build_plan
from rollbackd.reasons import IncidentState
from rollbackd.records import Incident, Release, Trigger
from tests.support.http_stub import JsonHandler, serve

NASTY = '../admin?drop=1&x=y#frag "quoted" \\ back'


class Recorder(JsonHandler):
    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.server.seen.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
        self.send_json(200, {})

    do_GET = do_POST = do_PUT = _record


@pytest.fixture
def stub() -> Iterator[Any]:
    with serve(Recorder, seen=[]) as server:
        yield server


def context(labels: dict[str, str]) -> StepContext:
    incident = Incident(
        id="i1",
        service="rag",
        state=IncidentState.RUNNING,
        dry_run=False,
        created_at=0,
        plan=[],
        trigger=Trigger(kind="alert", reason="t", requested_by="am", alertname="A", labels=labels),
    )

    async def save(key: str, value: Any) -> None:
        return None

    return StepContext(
        incident=incident,
        runtime=None,
        step_name="x",
        attempt=1,
        dry_run=False,  # type: ignore[arg-type]
        outputs={},
        log=logging.LoggerAdapter(logging.getLogger("t"), {}),
        save=save,
    )


def http_step(**options: Any) -> Any:
    ((step,),) = build_plan([{"type": "http", "name": "h", **options}], "plan")
    return step


async def test_url_components_are_percent_encoded(stub: Any) -> None:
    step = http_step(url=stub.url + "/svc/$label_instance?job=$label_job", method="GET")
    await step.run(context({"instance": NASTY, "job": "a&b=c"}))
    (seen,) = stub.seen
    path, _, query = seen["path"].partition("?")
    assert path.split("/") == ["", "svc", path.split("/")[2]] and unquote(path) == "/svc/" + NASTY  # one segment
    assert parse_qs(query) == {"job": ["a&b=c"]}  # one parameter


async def test_a_json_text_body_stays_json_and_keeps_the_value(stub: Any) -> None:
    step = http_step(
        url=stub.url + "/x",
        headers={"Content-Type": "application/json"},
        body='{"instance": "$label_instance", "n": 1}',
    )
    await step.run(context({"instance": NASTY + '", "admin": true, "x": "'}))
    sent = json.loads(stub.seen[0]["body"])
    assert sent == {"instance": NASTY + '", "admin": true, "x": "', "n": 1}


async def test_json_body_values_are_json_values(stub: Any) -> None:
    step = http_step(url=stub.url + "/x", json_body={"labels": {"i": "$label_instance"}, "list": ["$service"]})
    await step.run(context({"instance": NASTY}))
    assert json.loads(stub.seen[0]["body"]) == {"labels": {"i": NASTY}, "list": ["rag"]}


async def test_a_form_body_is_form_encoded(stub: Any) -> None:
    step = http_step(
        url=stub.url + "/x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body="instance=$label_instance&n=1",
    )
    await step.run(context({"instance": "a&admin=1"}))
    assert stub.seen[0]["body"] == "instance=a%26admin%3D1&n=1"


@pytest.mark.parametrize("value", ["v\r\nX-Admin: 1", "v\nX-Admin: 1", "v\rX-Admin: 1"])
async def test_header_values_with_cr_lf_or_nul_are_refused(stub: Any, value: str) -> None:
    step = http_step(url=stub.url + "/x", headers={"X-Instance": "$label_instance"})
    with pytest.raises(FatalError, match="X-Instance"):
        await step.run(context({"instance": value}))
    assert stub.seen == []
    await step.run(context({"instance": "plain"}))
    assert stub.seen[0]["headers"]["X-Instance"] == "plain"


async def test_the_deploy_url_encodes_the_release_version(stub: Any) -> None:
    deployer = HttpDeployer(
        HttpDeployer.Options.model_validate(
            {
                "type": "http",
                "url": stub.url + "/deploy/{version}?incident={incident}",
                "body": {"v": "{version}"},
                "health_url": stub.url + "/health",
            }
        )
    )
    await deployer.deploy(Release(service="rag", version="1.0/../../admin?x=1", digest="sha256:1"), incident="i&1")
    (seen,) = stub.seen
    path, _, query = seen["path"].partition("?")
    assert path.count("/") == 2 and unquote(path) == "/deploy/1.0/../../admin?x=1"
    assert parse_qs(query) == {"incident": ["i&1"]}
    assert json.loads(seen["body"]) == {"v": "1.0/../../admin?x=1"}
