"""The filesystem snapshot store, database-property SQL, retention planning and config validation: no I/O
beyond tmp_path."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rollbackd.errors import ConfigError, NotFoundError
from rollbackd.snapshots import aside_name, pre_name, restored_name
from rollbackd.snapshots.pgprops import apply_statements, set_clause, split_list
from rollbackd.snapshots.pgtools import Dsn
from rollbackd.snapshots.retention import plan
from rollbackd.snapshots.store import SnapshotStore, new_set_id


def _write_set(
    store: SnapshotStore, set_id: str, created_at: float, release: str | None = None, kind: str = "manual"
) -> None:
    tmp = store.begin(set_id)
    (tmp / "postgres").mkdir()
    (tmp / "postgres" / "toc.dat").write_bytes(b"dump bytes " + set_id.encode())
    store.commit(
        tmp,
        set_id,
        created_at=created_at,
        release=release,
        reason="test",
        kind=kind,
        manifests={"postgres": {"kind": "postgres", "tables": {"public.docs": {"rows": 3, "bytes": 1}}}},
    )


def test_commit_is_atomic_and_lists_newest_first(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "rag")
    _write_set(store, "20260101_000000_aa", 1.0, "v1")
    _write_set(store, "20260102_000000_bb", 2.0, "v2")
    half = store.begin("20260103_000000_cc")  # a snapshot interrupted while writing
    (half / "postgres").mkdir()
    assert [s.id for s in store.list()] == ["20260102_000000_bb", "20260101_000000_aa"]
    with pytest.raises(NotFoundError):
        store.get("20260103_000000_cc")
    snap = store.get("20260101_000000_aa")
    assert snap.verified and snap.release == "v1" and snap.files["postgres/toc.dat"]
    manifest = json.loads((tmp_path / "20260101_000000_aa" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"postgres/toc.dat"}
    assert store.sweep() == []  # still held by its writer (this store)
    os.close(store._held.pop(half.name))  # the writer dies: its lock goes with it
    assert SnapshotStore(tmp_path, "rag").sweep() == [".tmp-20260103_000000_cc"]
    assert not half.exists() and not list(tmp_path.glob(".lock*"))


def test_verify_refuses_changed_missing_and_extra_files(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "rag")
    _write_set(store, "s1", 1.0)
    assert store.verify("s1")["verified"]
    path = tmp_path / "s1" / "postgres" / "toc.dat"
    path.write_bytes(b"dump bytes tampered")
    result = store.verify("s1")
    assert not result["verified"] and "postgres/toc.dat: sha256 mismatch" in result["error"]
    assert not store.get("s1").verified
    path.unlink()
    (tmp_path / "s1" / "postgres" / "extra").write_text("x")
    error = store.verify("s1")["error"]
    assert "postgres/toc.dat: missing" in error and "postgres/extra: not in the manifest" in error


def test_delete_and_bad_ids(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "rag")
    _write_set(store, "s1", 1.0)
    store.delete("s1")
    assert store.list() == []
    for bad in ("../etc", ".tmp-x", "nope"):
        with pytest.raises(NotFoundError):
            store.get(bad)


def test_ids_and_names_fit_postgres() -> None:
    set_id = new_set_id(0)
    assert re.fullmatch(r"19700101_000000_[0-9a-f]{2}", set_id)
    assert restored_name("rag", set_id) == f"rag__rb_{set_id}"
    assert re.fullmatch(rf"rag__rb_{set_id}_[0-9a-f]{{4}}", aside_name("rag", set_id))
    assert pre_name("rag", "20261122-031502-A1b2") == "rag__pre_20261122_031502_a1b2"


def test_sets_made_in_the_same_second_get_distinct_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The random suffix is one byte: force it to repeat, as it did once in CI (a manual snapshot and the safety
    # snapshot before its restore, in one second), and the reservation must still hand out distinct ids.
    suffixes = iter(["65", "65", "65", "66"])
    monkeypatch.setattr("rollbackd.snapshots.store.secrets.token_hex", lambda n: next(suffixes))
    store = SnapshotStore(tmp_path, "rag")
    first, tmp = store.reserve(0.0)
    store.commit(tmp, first, created_at=0.0, release=None, reason="manual", manifests={})
    second, tmp2 = store.reserve(0.0)
    assert (first, second) == ("19700101_000000_65", "19700101_000000_66")
    assert tmp2.is_dir() and tmp2.name == ".tmp-19700101_000000_66"


def test_reserve_gives_up_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rollbackd.snapshots.store.secrets.token_hex", lambda n: "aa")
    store = SnapshotStore(tmp_path, "rag")
    store.reserve(0.0)
    with pytest.raises(FileExistsError, match="no free snapshot set id"):
        store.reserve(0.0, attempts=3)


def test_list_settings_are_split_and_quoted_like_pg_dump() -> None:
    assert split_list('"$user", public') == ["$user", "public"]
    assert split_list('app, "we""ird, x"') == ["app", 'we"ird, x']
    assert set_clause("search_path=app, public") == "\"search_path\" = 'app', 'public'"
    assert set_clause("statement_timeout=5s") == "\"statement_timeout\" = '5s'"
    assert set_clause("application_name=it's") == "\"application_name\" = 'it''s'"


def test_apply_statements_cover_every_database_property() -> None:
    props = {
        "owner": "app_owner",
        "connection_limit": 50,
        "comment": "the RAG corpus",
        "grants": [
            {"grantee": "app", "privilege": "CONNECT", "grantable": False},
            {"grantee": "app_owner", "privilege": "CREATE", "grantable": True},
        ],
        "settings": {"*": ["search_path=app, public"], "app": ["statement_timeout=5s"]},
    }
    sql = apply_statements("rag__rb_x", props, {"owner": "postgres", "settings": {"*": ["work_mem=1MB"]}})
    assert sql[:3] == [
        'ALTER DATABASE "rag__rb_x" OWNER TO "app_owner"',
        'ALTER DATABASE "rag__rb_x" CONNECTION LIMIT 50',
        "COMMENT ON DATABASE \"rag__rb_x\" IS 'the RAG corpus'",
    ]
    assert 'REVOKE ALL ON DATABASE "rag__rb_x" FROM PUBLIC' in sql
    assert 'GRANT CONNECT ON DATABASE "rag__rb_x" TO "app"' in sql
    assert 'GRANT CREATE ON DATABASE "rag__rb_x" TO "app_owner" WITH GRANT OPTION' in sql
    assert sql.index('ALTER DATABASE "rag__rb_x" RESET ALL') < sql.index(
        "ALTER DATABASE \"rag__rb_x\" SET \"search_path\" = 'app', 'public'"
    )
    assert 'ALTER ROLE "app" IN DATABASE "rag__rb_x" SET "statement_timeout" = \'5s\'' in sql


def test_default_acl_is_left_alone() -> None:
    props = {"owner": "o", "connection_limit": -1, "comment": None, "grants": None, "settings": {}}
    sql = apply_statements("d", props, {})
    assert not any(s.startswith(("REVOKE", "GRANT")) for s in sql)
    assert 'COMMENT ON DATABASE "d" IS NULL' in sql


@pytest.mark.parametrize(
    ("keep_last", "green", "in_use", "deleted"),
    [
        (2, set(), set(), ["s3", "s4"]),
        (1, {"v3"}, set(), ["s2", "s4"]),
        (1, set(), {"s4"}, ["s2", "s3"]),
        (10, set(), set(), []),
    ],
)
def test_retention_plan(keep_last: int, green: set[str], in_use: set[str], deleted: list[str]) -> None:
    sets = [SimpleNamespace(id=f"s{i}", release=f"v{i}") for i in range(1, 5)]
    keep, delete = plan(sets, keep_last, green, in_use)
    assert delete == deleted
    assert {k["id"] for k in keep} | set(delete) == {"s1", "s2", "s3", "s4"}


def test_dsn_password_never_in_argv() -> None:
    dsn = Dsn.parse("postgresql://app:s3cr%40t@db.example:6543/rag?sslmode=require")
    assert dsn.argv("rag__rb_x") == ["-h", "db.example", "-p", "6543", "-d", "rag__rb_x", "-U", "app"]
    env = dsn.env()
    assert env["PGPASSWORD"] == "s3cr@t" and env["PGSSLMODE"] == "require"
    assert "s3cr" not in dsn.where() and dsn.where("x") == "db.example:6543/x"
    with pytest.raises(ValueError):
        Dsn.parse("mysql://x/y")


def _settings(snapshots: object, plan_types: tuple[str, ...] = ("data.prepare",)) -> object:
    svc = SimpleNamespace(snapshots=snapshots, plan=[SimpleNamespace(type=t) for t in plan_types])
    return SimpleNamespace(services={"rag": svc})


def test_validate_names_the_key_path() -> None:
    from rollbackd.snapshots.plugin import validate

    good = {
        "dir": "/tmp/x",
        "stores": {
            "postgres": {"type": "postgres", "dsn": "postgresql://u@h/db"},
            "qdrant": {"type": "qdrant", "url": "http://127.0.0.1:6333", "alias": "docs"},
        },
    }
    assert validate(_settings(good)) == []
    bad = {
        "dir": "/tmp/x",
        "schedule": {"interval": "6h", "cron": "0 3 * * *"},
        "stores": {"postgres": {"type": "postgres", "dsn": "mysql://x", "jobs": 0}, "q": {"type": "qdrnt"}},
    }
    problems = validate(_settings(bad))
    assert any(p.startswith("services.rag.snapshots.schedule: ") for p in problems), problems
    bad["schedule"] = {"interval": "6h"}
    problems = validate(_settings(bad))
    assert any(p.startswith("services.rag.snapshots.stores.postgres.dsn: ") for p in problems), problems
    assert any(p.startswith("services.rag.snapshots.stores.postgres.jobs: ") for p in problems), problems
    assert any(p.startswith("services.rag.snapshots.stores.q.type: unknown type 'qdrnt'") for p in problems)
    assert validate(_settings(None)) == [
        "services.rag.plan: step data.prepare needs `services.rag.snapshots` to be configured"
    ]
    assert validate(_settings(None, ("command",))) == []


def test_parse_error_is_config_error() -> None:
    from rollbackd.snapshots.plugin import parse

    with pytest.raises(ConfigError) as info:
        parse({"stores": {}}, "services.rag.snapshots")
    assert any(p.startswith("services.rag.snapshots.dir: ") for p in info.value.problems)


def test_jobs_are_scheduled_per_service(tmp_path: Path) -> None:
    from rollbackd.plan import ServiceRuntime
    from rollbackd.snapshots.plugin import build_dataset, jobs

    cfg = {
        "dir": str(tmp_path),
        "schedule": {"cron": "0 3 * * *"},
        "retention": {"keep_last": 4},
        "stores": {"postgres": {"type": "postgres", "dsn": "postgresql://u@127.0.0.1/db", "password": "from-env"}},
    }
    runtime = ServiceRuntime(name="rag", config=SimpleNamespace(snapshots=cfg))  # type: ignore[arg-type]
    runtime.caps.snapshots = data = build_dataset(runtime, None)
    assert data.snapshotters["postgres"].dsn.password == "from-env"  # type: ignore[attr-defined]
    added: list[tuple[str, object]] = []
    scheduler = SimpleNamespace(add=lambda name, schedule, job: added.append((name, schedule)))
    core = SimpleNamespace(
        services={"rag": runtime, "other": ServiceRuntime(name="other", config=SimpleNamespace(snapshots=None))}
    )  # type: ignore[arg-type]
    jobs(core, scheduler)  # type: ignore[arg-type]
    assert [(n, s.cron, s.interval) for n, s in added] == [  # type: ignore[attr-defined]
        ("snapshot:rag", "0 3 * * *", None),
        ("snapshot-retention:rag", None, 3600.0),
    ]


async def test_prune_keeps_last_n_green_releases_and_sets_in_use(tmp_path: Path) -> None:
    from rollbackd.records import Release
    from rollbackd.snapshots.dataset import DataSet
    from rollbackd.snapshots.retention import prune

    store = SnapshotStore(tmp_path, "rag")
    for i in range(1, 6):  # s5 is the newest
        _write_set(store, f"s{i}", float(i), release=f"v{i}")

    class State:
        async def releases(self, service: str, limit: int = 100) -> list[Release]:
            return [Release(service, "v2", green_at=10.0), Release(service, "v3", status="superseded")]

        async def active_incidents(self) -> list[object]:
            return [
                SimpleNamespace(service="rag", context={"data_target": {"snapshot_set": "s1"}}),
                SimpleNamespace(service="other", context={"data_target": {"snapshot_set": "s3"}}),
            ]

    data = DataSet(service="rag", store=store, snapshotters={}, state=State())  # type: ignore[arg-type]
    dry = await prune(data, keep_last=1, dry_run=True)
    assert dry["deleted"] == ["s4", "s3"] and len(await data.list()) == 5
    result = await prune(data, keep_last=1)
    assert {k["id"]: k["why"] for k in result["kept"]} == {
        "s5": "one of the last 1, the newest verified set that is not a safety snapshot",
        "s2": "belongs to green release v2",
        "s1": "used by an active incident",
    }
    assert [s.id for s in await data.list()] == ["s5", "s2", "s1"]


def test_grants_keep_their_grantor_chain_in_order() -> None:
    from rollbackd.snapshots.pgprops import ordered_grants

    grants = [
        {"grantee": "reader", "privilege": "CONNECT", "grantable": False, "grantor": "app"},
        {"grantee": "app", "privilege": "CONNECT", "grantable": True, "grantor": "owner"},
        {"grantee": "x", "privilege": "CREATE", "grantable": False, "grantor": "nobody"},
    ]
    assert [(g["grantee"], role) for g, role in ordered_grants(grants, "owner")] == [
        ("app", None),
        ("reader", "app"),
        ("x", None),
    ]  # a grantor without the option: granted by the owner


def test_the_copy_is_created_like_the_snapshots_database() -> None:
    from rollbackd.snapshots.pglocale import create_sql

    icu = {
        "encoding": "UTF8",
        "lc_collate": "C.UTF-8",
        "lc_ctype": "C.UTF-8",
        "locale_provider": "icu",
        "icu_locale": "en-US",
    }
    assert create_sql("rag__rb_x", icu, 15) == (
        "CREATE DATABASE \"rag__rb_x\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' "
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    )
    assert create_sql("d", {"encoding": "SQL_ASCII", "lc_collate": "C", "lc_ctype": "C"}, 14) == (
        "CREATE DATABASE \"d\" TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'"
    )


def test_property_changes_name_live_and_snapshot() -> None:
    from rollbackd.snapshots.pgprops import changes

    live = {"owner": "o", "acl": ["b=c/o", "a=c/o"], "settings": {"*": ["search_path=public"]}}
    snap = {"owner": "o", "acl": ["a=c/o", "b=c/o"], "settings": {"*": ["search_path=app, public"], "r": ["x=1"]}}
    assert changes(live, snap) == {
        "settings": {"live": ["search_path=public"], "snapshot": ["search_path=app, public"]},
        "settings of r": {"live": [], "snapshot": ["x=1"]},
    }


async def test_safety_snapshots_are_never_the_restore_target_nor_push_the_good_set_out(tmp_path: Path) -> None:
    """Releases untracked: one good set, then eight safety snapshots of damaged state (refused or repeated
    restores): the target stays the good set and retention keeps it whatever keep_last says."""
    from rollbackd.snapshots.dataset import DataSet
    from rollbackd.snapshots.retention import prune

    store = SnapshotStore(tmp_path, "rag")
    _write_set(store, "good", 1.0)
    for i in range(8):
        _write_set(store, f"safety{i}", 10.0 + i, kind="safety")
    data = DataSet(service="rag", store=store, snapshotters={})
    target = await data.restore_target()
    assert target is not None and target.id == "good"
    result = await prune(data, keep_last=3)
    assert "good" not in result["deleted"] and len(result["deleted"]) == 5
    assert {k["id"]: k["why"] for k in result["kept"]}["good"] == (
        "the newest verified set that is not a safety snapshot"
    )


def test_old_manifests_get_their_kind_from_the_reason(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "rag")
    tmp = store.begin("old")
    store.commit(tmp, "old", created_at=1.0, release=None, reason="safety snapshot before incident x", manifests={})
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    del manifest["kind"]
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(manifest))
    assert store.get("old").is_safety


def test_kept_copies_have_their_own_bound() -> None:
    from rollbackd.snapshots.retention import plan_kept

    kept = [{"name": f"rag__pre_2026112{i}_000000_aaaa", "tag": f"2026112{i}_000000_aaaa"} for i in range(5)]
    stay, go = plan_kept(kept, 2, {"rag__pre_20261120_000000_aaaa"})
    assert [k["name"] for k in stay] == [
        "rag__pre_20261124_000000_aaaa",
        "rag__pre_20261123_000000_aaaa",
        "rag__pre_20261120_000000_aaaa",
    ]
    assert [k["name"] for k in go] == ["rag__pre_20261122_000000_aaaa", "rag__pre_20261121_000000_aaaa"]


def test_two_services_may_not_share_a_snapshot_directory(tmp_path: Path) -> None:
    from rollbackd.snapshots.plugin import validate

    def svc(d: str) -> object:
        return SimpleNamespace(
            plan=[], snapshots={"dir": d, "stores": {"postgres": {"type": "postgres", "dsn": "postgresql://u@h/db"}}}
        )

    shared = SimpleNamespace(
        services={
            "a": svc(str(tmp_path / "s")),
            "b": svc(str(tmp_path / "x" / ".." / "s")),
            "c": svc(str(tmp_path / "c")),
        }
    )
    assert validate(shared) == [
        f"services.b.snapshots.dir: {tmp_path / 's'} is also services.a's; two services "
        "may not share a snapshot directory"
    ]


async def test_the_green_releases_set_is_never_a_safety_snapshot_labelled_with_it(tmp_path: Path) -> None:
    """After a rollback to v1, a later incident's safety snapshot is labelled v1 (then live) but holds the
    damage: target selection by release must not pick it."""
    from rollbackd.snapshots.dataset import DataSet

    store = SnapshotStore(tmp_path, "rag")
    _write_set(store, "good-v1", 1.0, release="v1")
    _write_set(store, "safety-later", 2.0, release="v1", kind="safety")
    data = DataSet(service="rag", store=store, snapshotters={})
    found = await data.latest(release="v1", verified_only=True)
    assert found is not None and found.id == "good-v1"
    newest = await data.latest(verified_only=False, include_safety=True)
    assert newest is not None and newest.id == "safety-later"


_HOLDER = """
import sys, time
from pathlib import Path
from rollbackd.snapshots.store import SnapshotStore
store = SnapshotStore(Path(sys.argv[1]), "rag")
store.begin("20261205_000000_ab")
print("writing", flush=True)
time.sleep(60)
"""


def test_a_set_another_process_is_writing_is_never_swept(tmp_path: Path) -> None:
    """A replica sharing the directory (or any other process) that writes a set holds its lock: a sweep
    leaves it alone, and takes it once its writer is gone."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "writing"
        store = SnapshotStore(tmp_path, "rag")
        assert store.sweep() == [] and (tmp_path / ".tmp-20261205_000000_ab").is_dir()
        with pytest.raises(FileExistsError, match="being written"):
            store.begin("20261205_000000_ab")
    finally:
        holder.kill()
        holder.communicate()
    assert store.sweep() == [".tmp-20261205_000000_ab"]  # its writer died: a leftover now
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_committed_or_aborted_set_leaves_no_lock(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "rag")
    set_id, tmp = store.reserve(time.time())
    (tmp / "data").write_text("x")
    store.commit(tmp, set_id, created_at=time.time(), release=None, reason="r", manifests={})
    _, other = store.reserve(time.time())
    assert store.sweep() == []  # this process's own set under way is held too
    store.abort(other)
    assert sorted(p.name for p in tmp_path.iterdir()) == [set_id]
