"""What changed between the bad release and the green one: every kind of difference, secrets masked."""

from __future__ import annotations

from typing import Any

from rollbackd.records import Release
from rollbackd.release_diff import changes, data_counts


def spec(env: list[str], **over: Any) -> dict[str, Any]:
    cfg = {"Env": env, "User": over.pop("user", "1000"), "Cmd": over.pop("cmd", ["/bin/sh", "/start.sh"])}
    host = {
        "Memory": over.pop("memory", 0),
        "PidsLimit": over.pop("pids", 200),
        "Binds": over.pop("binds", ["/srv/data:/data:ro"]),
    }
    return {"image_id": over.pop("image_id"), "config": cfg, "host_config": host}


BAD = Release(
    service="rag",
    version="v2",
    image="reg/rag:v2",
    digest="sha256:" + "2" * 64,
    schema_version="7",
    spec={
        "web": spec(
            ["WORKERS=4", "FEATURE_X=on", "API_KEY=s3cr3t-new", "MODEL=big"],
            user="0",
            cmd=["/bin/sh", "-c", "serve --fast"],
            memory=268435456,
            pids=2048,
            binds=["/srv/data:/data:ro", "cache:/cache"],
            image_id="sha256:" + "2" * 64,
        )
    },
)
GREEN = Release(
    service="rag",
    version="v1",
    image="reg/rag:v1",
    digest="sha256:" + "1" * 64,
    schema_version="6",
    spec={"web": spec(["WORKERS=4", "API_KEY=s3cr3t-old", "MODEL=small", "OLD_FLAG=1"], image_id="sha256:" + "1" * 64)},
)


def test_every_kind_of_change_in_the_rollback_direction() -> None:
    data = {
        "set": "20261204-0300-ab",
        "counts": data_counts(
            {
                "postgres": {"tables": {"docs": {"rows": 120}, "chunks": {"rows": 4100}}},
                "qdrant": {"collections": {"docs": {"points": 4100}}},
            }
        ),
    }
    lines = changes(BAD, GREEN, data)
    text = "\n".join(lines)
    print("\n" + text)
    assert lines[0] == "release: v2 -> v1"
    assert "image: reg/rag:v2 (222222222222) -> reg/rag:v1 (111111111111)" in lines
    assert "schema version: 7 -> 6" in lines
    assert "env OLD_FLAG added: '1'" in lines
    assert "env FEATURE_X removed (was 'on')" in lines
    assert "env MODEL: 'big' -> 'small'" in lines
    assert "env API_KEY: *** -> ***" in lines and "s3cr3t" not in text  # secret values never shown
    assert not any("WORKERS" in line for line in lines)  # unchanged
    assert "user: 0 -> 1000" in lines
    assert "cmd: ['/bin/sh', '-c', 'serve --fast'] -> ['/bin/sh', '/start.sh']" in lines
    assert "Memory: 268435456 -> 0" in lines and "PidsLimit: 2048 -> 200" in lines
    assert "mounts: ['/srv/data:/data:ro', 'cache:/cache'] -> ['/srv/data:/data:ro']" in lines
    assert lines[-1] == (
        "data: snapshot set 20261204-0300-ab (postgres: chunks 4100 rows, docs 120 rows; qdrant: docs 4100 points)"
    )


def test_without_specs_it_says_what_it_could_not_compare() -> None:
    bad = Release(service="rag", version="v2", digest="sha256:2")
    lines = changes(bad, Release(service="rag", version="v1", digest="sha256:1", spec=GREEN.spec))
    assert "container settings: not compared (no spec recorded for v2)" in lines
    assert not any(line.startswith("schema") for line in lines)  # neither recorded one
