"""An incident's context is journaled with a version (rollbackd.facts). An incident journaled by the previous
rollbackd (its context without a version, the facts as plain dicts) resumes after an upgrade: the steps read
its facts through the typed accessors and the context is written back in today's format."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rollbackd import facts
from rollbackd.reasons import IncidentState, StepState
from rollbackd.records import Incident, Trigger
from rollbackd.state.sqlite import SqliteStateStore
from tests.support.daemon import running_daemon, write_config

# What rollbackd wrote before the context had a version: a real row's context, facts as plain dicts.
OLD_CONTEXT: dict[str, Any] = {
    "target": {
        "version": "v7",
        "image": "app:v7",
        "digest": "sha256:ab",
        "release_id": 3,
        "schema_version": "2",
        "snapshot_set": None,
        "code_only": True,
        "why": "last green",
        "what_changed": ["image"],
    },
    "traffic_weight": 30,
    "act_latency_observed": True,
}


def switch(tmp_path: Path) -> dict[str, Any]:
    state = tmp_path / "weight"
    state.write_text("0")  # the old daemon cut traffic before it died
    return {
        "type": "command",
        "get_argv": ["/bin/cat", str(state)],
        "set_argv": [
            sys.executable,
            "-c",
            "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
            str(state),
            "{weight}",
        ],
    }


async def test_an_incident_of_the_previous_context_format_resumes(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    plan = [
        {"type": "traffic.cut"},
        {"type": "command", "name": "note", "argv": ["/bin/sh", "-c", f'echo "$ROLLBACKD_TARGET_VERSION" > {seen}']},
        {"type": "traffic.restore"},
    ]
    cfg = write_config(
        tmp_path,
        services={
            "rag": {
                "policy": {"confirm": "off"},
                "releases": {"track": False},
                "traffic": switch(tmp_path),
                "plan": plan,
            }
        },
    )
    store = SqliteStateStore(SqliteStateStore.Options(path=str(tmp_path / "state.db")))
    await store.open()
    old = Incident(
        id="20261122-030000-abcd",
        service="rag",
        state=IncidentState.RUNNING,
        trigger=Trigger(kind="manual", reason="r", requested_by="me"),
        dry_run=False,
        created_at=1.0,
        started_at=1.0,
        plan=plan,
        context=dict(OLD_CONTEXT),
    )
    assert await store.create_incident(old)
    await store.step_started(old.id, 0, "traffic.cut", "traffic.cut", 1, 1.0)
    await store.step_finished(old.id, 0, StepState.DONE, 2.0, {"weight_before": 30}, None)
    await store.close()

    async with running_daemon(cfg) as daemon:
        state = await daemon.core.runner.wait(old.id)
        done = await daemon.core.store.get_incident(old.id)
    assert state is IncidentState.RESOLVED, done
    assert seen.read_text().strip() == "v7"  # the old target read through facts.TARGET
    assert (tmp_path / "weight").read_text() == "30"  # the old traffic_weight read through facts.TRAFFIC_WEIGHT
    assert done is not None and done.context[facts.VERSION_KEY] == facts.CONTEXT_VERSION
    assert {k: v for k, v in done.context.items() if k != facts.VERSION_KEY} == OLD_CONTEXT


def test_typed_facts_round_trip_and_a_newer_context_is_refused() -> None:
    context = facts.new_context()
    prepared = facts.DataPrepared("s1", {"pg": {"database": "rag_r1"}})
    facts.DATA_PREPARED.put(context, prepared)
    facts.TRAFFIC_WEIGHT.put(context, 0)
    assert facts.DATA_PREPARED.of(context) == prepared and facts.TRAFFIC_WEIGHT.of(context) == 0
    assert facts.DEPLOY_FROM.of(context) is None
    assert facts.upgrade(dict(OLD_CONTEXT))[facts.VERSION_KEY] == facts.CONTEXT_VERSION
    assert facts.TARGET.of(OLD_CONTEXT) == facts.TargetFact(
        version="v7",
        image="app:v7",
        digest="sha256:ab",
        release_id=3,
        schema_version="2",
        code_only=True,
        why="last green",
        what_changed=("image",),
    )
    try:
        facts.upgrade({facts.VERSION_KEY: facts.CONTEXT_VERSION + 1})
    except ValueError:
        pass
    else:
        raise AssertionError("a context newer than this rollbackd must be refused")
