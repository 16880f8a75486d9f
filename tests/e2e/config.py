"""The rollbackd configuration the end-to-end stack runs with: every capability wired to the stack's
real components, the default plan of DESIGN."""

from __future__ import annotations

import shutil
from typing import Any

from tests.support.daemon import REPO, config_dict, secret_ref

DEFAULT_PLAN = [
    {"type": "snapshot.safety"},
    {"type": "data.prepare", "timeout": "10m"},
    {"type": "traffic.cut"},
    {"type": "data.swap"},
    {"type": "deploy.revert", "timeout": "5m"},
    {"type": "verify", "timeout": "5m", "only": ["smoke", "counts", "ragas_quick", "governance"]},
    {"type": "traffic.restore"},
    # Last: the alert clears only as the rule's window drains, and only with users back on the service.
    {"type": "verify", "name": "alert_cleared", "timeout": "10m", "only": ["alert_cleared"]},
]


def rollbackd_config(stack: Any) -> dict[str, Any]:
    sources = stack.dir / "sources.yaml"
    shutil.copy(REPO / "tests" / "data" / "sources.yaml", sources)
    rag = stack.rag_url
    service = {
        "policy": {"confirm": "required", "cooldown": "30m", "budget": {"max": 2, "window": "6h"}},
        "releases": {"track": True, "data": "required"},
        "escalate_mention": "<!subteam^S0ONCALL>",
        "plan": DEFAULT_PLAN,
        "snapshots": {
            "dir": str(stack.dir / "snapshots"),
            "safety_snapshot": True,
            "stores": {
                "postgres": {
                    "type": "postgres",
                    "dsn": secret_ref("RAG_PG_DSN", stack.dsn),
                    "jobs": 2,
                    "schema_version_sql": "SELECT max(version) FROM schema_version",
                },
                "qdrant": {"type": "qdrant", "url": stack.qdrant.url, "alias": "docs"},
            },
        },
        "deploy": {
            "type": "docker",
            "docker_host": stack.podman.docker_host,
            "containers": [{"name": stack.container_name, "health_url": f"{rag}/healthz"}],
            "health_timeout": "60s",
            "stop_timeout": 5,
        },
        "traffic": {
            "type": "http",
            "get_url": f"{stack.traffic.url}/weight",
            "weight_field": "weight",
            "set_url": f"{stack.traffic.url}/weight",
            "set_method": "PUT",
            "body": {"weight": "{weight}"},
        },
        "verify": {
            "checks": [
                {
                    "type": "smoke",
                    "deadline": "60s",
                    "warmup": 1,
                    "consecutive": 3,
                    "interval": "0.5s",
                    "requests": [
                        {"name": "health", "url": f"{rag}/healthz"},
                        {
                            "name": "query",
                            "method": "POST",
                            "url": f"{rag}/query",
                            "json": {"question": "What is the refund window?"},
                            "expect_fields": ["answer"],
                            "latency_budget": "2s",
                        },
                    ],
                },
                {
                    "type": "counts",
                    "stores": {
                        "postgres": {"dsn": secret_ref("RAG_PG_DSN", stack.dsn)},
                        "qdrant": {"url": stack.qdrant.url},
                    },
                    "exclude": ["conversations"],
                },
                {
                    "type": "ragas_quick",
                    "golden": str(REPO / "tests" / "data" / "golden.yaml"),
                    "limit": 20,
                    "request": {"url": f"{rag}/query"},
                    "deadline": "120s",
                },
                {
                    "type": "governance",
                    "sources_file": str(sources),
                    "corpus": {"dsn": secret_ref("RAG_PG_DSN", stack.dsn), "query": "SELECT DISTINCT source FROM docs"},
                },
                {"type": "alert_cleared", "deadline": "120s", "interval": "1s", "stable_for": "5s"},
            ]
        },
        # The rehearsal (rollbackd drill): the rest is derived (health URL and check URLs on the drill's
        # port, the corpus DSN on the scratch database; checks: all but counts and alert_cleared).
        "drill": {
            "env": {
                "RAG_PORT": "{port}",
                "RAG_PG_DSN": stack.dsn.rsplit("/", 1)[0] + "/{postgres.database}",
                "RAG_QDRANT_COLLECTION": "{qdrant.collection}",
                "RAG_SELF_TRAFFIC_RPS": "0",
            },
            "health_timeout": "60s",
            "live_writes": ["conversations"],
        },
    }
    cfg = config_dict(
        stack.dir,
        services={"rag": service},
        notify={
            "type": "slack",
            "bot_token": "${SLACK_BOT_TOKEN}",
            "channel": "C0RAG",
            "base_url": stack.slack.base_url,
        },
    )
    return cfg
