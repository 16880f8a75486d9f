"""The drill without a world: config validation (key paths), templates, the scratch container's create
body, the rewrite of the checks, and the CLI's rendering and exit codes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from rollbackd.cli import drill as cli_drill
from rollbackd.cli.client import EXIT_OK, EXIT_VERIFY_FAILED
from rollbackd.cli.main import build_parser
from rollbackd.drill import options, scratch
from rollbackd.errors import ConfigError
from rollbackd.wiring import parse_settings as parse

ENV = {
    "ROLLBACKD_WEBHOOK_TOKEN": "w" * 24,
    "ROLLBACKD_API_TOKEN": "a" * 24,
    "RAG_PG_DSN": "postgresql://postgres@127.0.0.1:5432/rag",
}


def service(**drill: Any) -> dict[str, Any]:
    return {
        "policy": {"confirm": "off"},
        "plan": [{"type": "data.prepare"}, {"type": "deploy.revert"}, {"type": "verify"}],
        "snapshots": {
            "dir": "/tmp/rbt-snaps",
            "stores": {
                "postgres": {"type": "postgres", "dsn": "${RAG_PG_DSN}"},
                "qdrant": {"type": "qdrant", "url": "http://127.0.0.1:6333", "alias": "docs"},
            },
        },
        "deploy": {"type": "docker", "containers": [{"name": "rag", "health_url": "http://127.0.0.1:8000/healthz"}]},
        "verify": {
            "checks": [
                {"type": "smoke", "requests": [{"name": "health", "url": "http://127.0.0.1:8000/healthz"}]},
                {
                    "type": "governance",
                    "sources_file": "/etc/rag/sources.yaml",
                    "corpus": {"dsn": "${RAG_PG_DSN}", "query": "SELECT DISTINCT source FROM docs"},
                },
                {"type": "alert_cleared"},
            ]
        },
        "drill": drill,
    }


def load(svc: dict[str, Any]) -> Any:
    cfg = {
        "auth": {
            "webhook_token": "${ROLLBACKD_WEBHOOK_TOKEN}",
            "api_tokens": [{"name": "t", "token": "${ROLLBACKD_API_TOKEN}"}],
        },
        "state": {"type": "sqlite", "path": "/tmp/rbt-unit-state.db"},
        "services": {"rag": svc},
    }
    return parse(json.dumps(cfg), ENV)


def problems(svc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(svc)
    return caught.value.problems


def test_a_valid_drill_section_loads_and_weekly_is_the_default_schedule() -> None:
    settings = load(service(schedule="weekly", env={"RAG_PORT": "{port}", "DB": "{postgres.database}"}))
    opts, found = options.parse("rag", settings.services["rag"])
    assert found == [] and opts is not None
    assert opts.schedule is not None and opts.schedule.cron == options.WEEKLY
    assert options.DrillOptions.model_validate({"schedule": {}}).schedule.cron == options.WEEKLY  # type: ignore[union-attr]
    assert options.DrillOptions.model_validate({"schedule": {"interval": "7d"}}).schedule.interval == 7 * 86400  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("drill", "expected"),
    [
        ({"port": 70000}, "services.rag.drill.port: "),
        ({"prot": 1}, "services.rag.drill.prot: "),
        ({"schedule": {"cron": "not a cron"}}, "services.rag.drill.schedule"),
        (
            {"env": {"RAG_PG_DSN": "postgresql:///{postgres.db}"}},
            "services.rag.drill.env.RAG_PG_DSN: unknown placeholder {postgres.db}",
        ),
        ({"env": {"X": "{mysql.database}"}}, "services.rag.drill.env.X: unknown placeholder {mysql.database}"),
        ({"env": {"X": "{port"}}, "services.rag.drill.env.X: "),
        ({"health_url": "http://127.0.0.1:9/healthz"}, "services.rag.drill.health_url: must contain {port}"),
        ({"checks": ["smoke", "ragas"]}, "services.rag.drill.checks[1]: unknown check 'ragas'"),
        ({"checks": []}, "services.rag.drill.checks: empty"),
        ({"container": "web"}, "services.rag.drill.container: 'web' is not one of deploy.containers"),
        (
            {"rewrite": {"http://a": "http://127.0.0.1:{qdrant.nope}"}},
            "services.rag.drill.rewrite['http://a']: unknown",
        ),
    ],
)
def test_config_problems_name_the_key_path(drill: dict[str, Any], expected: str) -> None:
    found = problems(service(**drill))
    assert any(p.startswith(expected) for p in found), found


def test_a_drill_needs_snapshots_a_docker_deployer_and_checks() -> None:
    svc = service()
    del svc["snapshots"], svc["verify"]
    svc["deploy"] = {"type": "command", "argv": ["deploy", "{image}"], "health_url": "http://127.0.0.1:8000/h"}
    svc["plan"] = [{"type": "deploy.revert"}]
    found = problems(svc)
    assert any(p.startswith("services.rag.drill: a drill needs services.rag.snapshots") for p in found), found
    assert any(p.startswith("services.rag.drill: a drill needs services.rag.deploy of type docker") for p in found)
    assert any(p.startswith("services.rag.drill: a drill needs services.rag.verify.checks") for p in found)


def test_templates_render_ports_and_restored_fields() -> None:
    values = options.values_of(
        4321,
        {"postgres": {"database": "rag__rb_s1", "live": "rag", "tables": {}}, "qdrant": {"collection": "docs__rb_s1"}},
    )
    assert options.render("postgresql://h/{postgres.database}?x={port}", values) == "postgresql://h/rag__rb_s1?x=4321"
    assert options.render("{qdrant.collection}", values) == "docs__rb_s1"


LIVE = {
    "Id": "abc123",
    "Image": "sha256:old",
    "Config": {
        "Env": ["RAG_PORT=8000", "RAG_PG_DSN=postgresql://h/rag", "KEEP=1"],
        "Labels": {"team": "rag"},
        "Hostname": "raghost",
        "ExposedPorts": {"8000/tcp": {}},
    },
    "HostConfig": {
        "PortBindings": {"8000/tcp": [{"HostIp": "", "HostPort": "8000"}]},
        "RestartPolicy": {"Name": "always"},
        "Binds": ["/data:/data:ro"],
        "NetworkMode": "ragnet",
    },
    "NetworkSettings": {"Networks": {"ragnet": {"Aliases": ["rag", "abc123"]}}},
}


def test_the_scratch_container_never_takes_the_live_port_alias_or_restart_policy() -> None:
    from rollbackd.deploy.docker import creation_body

    container = scratch.ScratchContainer(None, "rag", "d1", "rag", "inst1")  # type: ignore[arg-type]
    body = container.body(
        creation_body(copy.deepcopy(LIVE), {}, "sha256:green"),
        {"RAG_PORT": "4321", "RAG_PG_DSN": "postgresql://h/rag__rb_s1"},
        4321,
        None,
    )
    assert body["Image"] == "sha256:green"
    assert sorted(body["Env"]) == ["KEEP=1", "RAG_PG_DSN=postgresql://h/rag__rb_s1", "RAG_PORT=4321"]
    assert body["Labels"] == {
        "team": "rag",
        scratch.LABEL: "d1",
        scratch.SERVICE_LABEL: "rag",
        scratch.INSTALLATION_LABEL: "inst1",  # a sweep takes only its own installation's leftovers
    }
    assert "PortBindings" not in body["HostConfig"] and "RestartPolicy" not in body["HostConfig"]
    assert body["HostConfig"]["Binds"] == ["/data:/data:ro"] and "Hostname" not in body
    assert body["NetworkingConfig"]["EndpointsConfig"]["ragnet"]["Aliases"] == []
    published = container.body(creation_body(copy.deepcopy(LIVE), {}, "sha256:green"), {}, 4321, 8000)
    assert published["HostConfig"]["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "4321"}]}
    assert container.name == "rag__drill_d1"


def test_checks_are_rewritten_to_the_scratch_copies_and_counts_and_alert_cleared_left_out() -> None:
    settings = load(service())
    svc = settings.services["rag"]
    prepared = {"postgres": {"kind": "postgres", "database": "rag__rb_s1", "live": "rag"}}
    exact = scratch.dsn_rewrite(svc.snapshots, prepared)
    assert exact == {"postgresql://postgres@127.0.0.1:5432/rag": "postgresql://postgres@127.0.0.1:5432/rag__rb_s1"}
    mapping = {"http://127.0.0.1:8000": "http://127.0.0.1:4321"}
    checks = scratch.scratch_checks("rag", svc, options.DrillOptions(), mapping, exact)
    assert [c.name for c in checks] == ["smoke", "governance"]
    smoke, governance = checks
    assert smoke.options.requests[0].url == "http://127.0.0.1:4321/healthz"  # type: ignore[attr-defined]
    assert governance.options.corpus.dsn.get_secret_value() == "postgresql://postgres@127.0.0.1:5432/rag__rb_s1"  # type: ignore[attr-defined]
    assert scratch.rewrite_strings(["postgresql://postgres@127.0.0.1:5432/rag_audit"], mapping, exact) == [
        "postgresql://postgres@127.0.0.1:5432/rag_audit"
    ]
    only = scratch.scratch_checks("rag", svc, options.DrillOptions(checks=["alert_cleared"]), mapping)
    assert [c.name for c in only] == ["alert_cleared"]
    assert svc.verify["checks"][0]["requests"][0]["url"] == "http://127.0.0.1:8000/healthz"  # the live config stays


REPORT = {
    "id": "20261122_040000_ab12",
    "service": "rag",
    "verdict": "NO-GO",
    "reason": "deploy: not healthy",
    "snapshot_set": "s1",
    "release": {"version": "v1", "live": "v2"},
    "time_to_restore_s": None,
    "torn_down": True,
    "results": [],
    "notes": [],
    "stages": [
        {"name": "pick", "seconds": 0.01, "ok": True, "detail": "release v1"},
        {"name": "deploy", "seconds": 3.2, "ok": False, "detail": "not healthy"},
        {"name": "teardown", "seconds": 0.2, "ok": True, "detail": "container removed"},
    ],
}


class FakeClient:
    timeout = 30.0

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        self.posted: list[Any] = []

    def post(self, path: str, body: Any = None) -> dict[str, Any]:
        self.posted.append((path, body))  # the drill runs in the daemon; the CLI follows its journal
        return {"id": self.report["id"], "service": "rag", "state": "running", "follow": "/v1/drills?service=rag"}

    def get(self, path: str) -> dict[str, Any]:
        return {"drills": [{**self.report, "id": "an-older-drill"}, self.report]}


def test_cli_renders_the_report_and_exits_4_on_no_go(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["drill", "--service", "rag", "--reason", "weekly"])
    client = FakeClient(REPORT)
    assert cli_drill.cmd_drill(args, client) == EXIT_VERIFY_FAILED  # type: ignore[arg-type]
    assert client.posted == [("/v1/drill", {"service": "rag", "reason": "weekly", "background": True})]
    assert client.timeout == 30  # no request held open for the whole drill
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "drill 20261122_040000_ab12 of rag: NO-GO"
    assert "    deploy    FAIL    3.20s  not healthy" in out and "time to restore: -" in out
    go = {**REPORT, "verdict": "GO", "time_to_restore_s": 4.5}
    args = build_parser().parse_args(["drill", "--json"])
    assert cli_drill.cmd_drill(args, FakeClient(go)) == EXIT_OK  # type: ignore[arg-type]
    assert json.loads(capsys.readouterr().out)["time_to_restore_s"] == 4.5
    args = build_parser().parse_args(["drill", "--history"])
    assert cli_drill.cmd_drill(args, FakeClient(go)) == EXIT_OK  # type: ignore[arg-type]
    assert "20261122_040000_ab12  rag  GO" in capsys.readouterr().out


def test_status_text_shows_the_last_drill() -> None:
    from rollbackd.cli import render

    body = {
        "mode": "auto",
        "paused": None,
        "services": {
            "rag": {
                "paused": None,
                "held": None,
                "budget": {"remaining": 2, "max": 2, "window_s": 21600},
                "cooldown_remaining_s": 0,
                "drill": {"running": None, "last": {**REPORT, "finished_at": None}},
            }
        },
    }
    text = render.status(body)
    assert "  drill:        NO-GO -, time to restore -s (20261122_040000_ab12)" in text
    assert "deploy: not healthy" in text


def test_the_schedule_becomes_a_scheduler_job(tmp_path: Any) -> None:
    from rollbackd.drill import plugin
    from rollbackd.drill.runner import Drill
    from rollbackd.scheduler import Scheduler
    from rollbackd.wiring import build_core

    svc = service(schedule={"cron": "0 4 * * 1"})
    svc["snapshots"]["dir"] = str(tmp_path / "snaps")
    core = build_core(load(svc))
    assert isinstance(core.services["rag"].caps.drill, Drill)
    scheduler = Scheduler()
    plugin.jobs(core, scheduler)
    assert scheduler.jobs == ["drill-rag"]


# ---- isolation: the scratch container's env against the live data ------------------------------------
def test_isolation_finds_every_live_reference_in_env_and_command() -> None:
    from rollbackd.drill.isolation import references

    live = {
        "postgres": {"kind": "postgres", "database": "rag"},
        "qdrant": {"kind": "qdrant", "alias": "docs", "collection": "docs__v1"},
    }
    copies = {
        "postgres": {"kind": "postgres", "database": "rag__rb_s1"},
        "qdrant": {"kind": "qdrant", "collection": "docs__rb_s1"},
    }
    good = {
        "Env": [
            "RAG_PG_DSN=postgresql://u:pw@db:5432/rag__rb_s1?sslmode=disable",
            "RAG_QDRANT_COLLECTION=docs__rb_s1",
            "RAG_QDRANT_URL=http://127.0.0.1:6333",
            "SOURCES=/app/docs/sources.yaml",
            "RAG_PORT=8000",
        ],
        "Cmd": ["python3", "/app/main.py"],
    }
    assert references(good, live, copies, ["http://127.0.0.1:8000/healthz"]) == []
    bad = {
        "Env": [
            "RAG_PG_DSN=postgresql://u:pw@db:5432/rag",
            "AUDIT=host=db dbname=rag user=x",
            "PGDATABASE=rag",
            "COLL=docs",
            "LIST=a,docs__v1",
            "UPSTREAM=http://127.0.0.1:8000/query",
        ],
        "Cmd": ["serve", "--qdrant=http://q:6333/collections/docs/points"],
        "Entrypoint": None,
    }
    assert references(bad, live, copies, ["http://127.0.0.1:8000/healthz", "http://127.0.0.1:80/x"]) == [
        "env RAG_PG_DSN points at the live database rag",
        "env AUDIT points at the live database rag",
        "env PGDATABASE points at the live database rag",
        "env COLL names the live collection docs",
        "env LIST names the live collection docs__v1",
        "env UPSTREAM reaches the live service at 127.0.0.1:8000",
        "cmd names the live collection docs",
        "nothing points the container at the scratch copy rag__rb_s1 (postgres): set drill.env",
        "nothing points the container at the scratch copy docs__rb_s1 (qdrant): set drill.env",
    ]
    near = {
        "Env": [
            "A=http://127.0.0.1:80001/x",
            "B=postgresql://db/rag_audit",
            "C=postgresql://db/rag__rb_s1",
            "D=docs__rb_s1",
        ]
    }
    assert references(near, live, copies, ["http://127.0.0.1:8000/healthz"]) == []


def test_isolation_changes_name_each_difference() -> None:
    from rollbackd.drill.isolation import changes

    before = {
        "postgres": {"kind": "postgres", "database": "rag", "oid": 1, "tables": {"public.docs": [1, 0, 0, 9]}},
        "qdrant": {"kind": "qdrant", "alias": "docs", "collection": "docs__v1", "points": 200},
    }
    assert changes(before, before) == []
    after = {
        "postgres": {**before["postgres"], "oid": 2, "tables": {"public.docs": [2, 0, 1, 9]}},
        "qdrant": {**before["qdrant"], "collection": "docs__rb_s1"},
    }
    assert changes(before, after) == [
        "postgres: oid 1 -> 2",
        "postgres: table public.docs written (ins/upd/del/filenode [1, 0, 0, 9] -> [2, 0, 1, 9])",
        "qdrant: collection docs__v1 -> docs__rb_s1",
    ]


def test_check_options_are_scanned_for_live_references_but_not_sql_table_names() -> None:
    from rollbackd.drill.isolation import live_references, option_strings

    opts = {
        "requests": [{"url": "http://127.0.0.1:8000/healthz"}],
        "corpus": {"dsn": "postgresql://db/rag", "query": "SELECT source FROM docs"},
    }
    strings = option_strings(opts)
    assert strings == [
        ("requests[0].url", "http://127.0.0.1:8000/healthz"),
        ("corpus.dsn", "postgresql://db/rag"),
        ("corpus.query", "SELECT source FROM docs"),
    ]
    live = {"pg": {"kind": "postgres", "database": "rag"}, "q": {"kind": "qdrant", "alias": "docs"}}
    problems, _ = live_references(strings, live, ["http://127.0.0.1:8000/healthz"], collections=False)
    assert problems == [
        "requests[0].url reaches the live service at 127.0.0.1:8000",
        "corpus.dsn points at the live database rag",
    ]
