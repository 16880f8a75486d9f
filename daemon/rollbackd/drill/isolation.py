"""The drill proves it is isolated, twice.

Before the scratch container starts: every database, collection and URL its effective environment and
command name must be a scratch copy. Any reference to the live database (a DSN's database, a
``dbname=`` or a value equal to its name), the live collection or alias, or the live service's address
is a NO-GO before anything runs; so is a scratch copy the container is not pointed at (it would fall
back to whatever the image defaults to).

Around the drill: a fingerprint of the live data, taken before and after, as the servers report it.
Postgres: the database's oid and, per table, the inserted/updated/deleted tuple counters and the file
node (a TRUNCATE or rewrite changes it); reads, including rollbackd's own, change none of them. Qdrant:
the alias's target, and that collection's points and status. Tables or collections the live service
writes by itself are left out (``drill.live_writes``). Any difference is a NO-GO with a page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from rollbackd.records import JSON

_PG_URL = re.compile(r"postgres(?:ql)?://[^\s'\"]+")
_PG_KW = re.compile(r"\bdbname\s*=\s*'?([^\s']+)")
_SEP = re.compile(r"[\s,;]+")
_COLLECTION_PATH = re.compile(r"/collections/([^/?#\s]+)")
TABLES_SQL = """
    SELECT schemaname || '.' || relname AS name, n_tup_ins, n_tup_upd, n_tup_del,
           pg_relation_filenode(relid) AS filenode
    FROM pg_stat_user_tables ORDER BY 1
"""


# ---- before the container starts ------------------------------------------------------------------
def databases_named(value: str) -> set[str]:
    """The databases a string points at: DSN paths, ``dbname=`` keywords."""
    names = {urlsplit(m.group(0)).path.lstrip("/") for m in _PG_URL.finditer(value)}
    names |= {m.group(1) for m in _PG_KW.finditer(value)}
    return {n for n in names if n}


def names_in(value: str) -> set[str]:
    """Collection-like names a string gives: the whole value, list items, ``/collections/<name>``."""
    return {t for t in _SEP.split(value) if t} | set(_COLLECTION_PATH.findall(value))


def strings_of(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, value) for each env value, command and entrypoint argument of a creation body."""
    out = [(f"env {e.partition('=')[0]}", e.partition("=")[2]) for e in body.get("Env") or []]
    for key in ("Cmd", "Entrypoint"):
        value = body.get(key) or []
        out += [(key.lower(), str(v)) for v in ([value] if isinstance(value, str) else value)]
    return out


def live_references(
    strings: Iterable[tuple[str, str]], live: Mapping[str, JSON], live_urls: Iterable[str], *, collections: bool = True
) -> tuple[list[str], set[str]]:
    """(one sentence per live reference in the strings, every database/collection name they give).
    ``collections``: look for bare collection names too (not in SQL text, where ``docs`` is a table)."""
    live_dbs = {str(v["database"]) for v in live.values() if v.get("kind") == "postgres"}
    live_names = {
        str(v[k]) for v in live.values() if v.get("kind") == "qdrant" for k in ("alias", "collection") if v.get(k)
    }
    netlocs = {urlsplit(u).netloc for u in live_urls if urlsplit(u).netloc}
    problems: list[str] = []
    seen: set[str] = set()
    for where, value in strings:
        dbs = databases_named(value) | ({value} & live_dbs)
        names = names_in(value)
        seen |= dbs | names
        problems += [f"{where} points at the live database {db}" for db in sorted(dbs & live_dbs)]
        problems += [f"{where} names the live collection {n}" for n in sorted(names & live_names) if collections]
        problems += [
            f"{where} reaches the live service at {n}"
            for n in sorted(netlocs)
            if re.search(re.escape(n) + r"(?![0-9])", value)
        ]
    return problems, seen


def references(
    body: Mapping[str, Any], live: Mapping[str, JSON], copies: Mapping[str, JSON], live_urls: Iterable[str]
) -> list[str]:
    """What is wrong with the scratch container's creation body; [] when it reaches scratch copies only."""
    problems, seen = live_references(strings_of(body), live, live_urls)
    for store, restored in copies.items():
        copy = str(restored.get("database") or restored.get("collection") or "")
        if copy and copy not in seen:
            problems.append(f"nothing points the container at the scratch copy {copy} ({store}): set drill.env")
    return problems


def option_strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(key path, string) for every string in a check's options: what the drill's checks will reach."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in option_strings(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in option_strings(v, f"{path}.{k}" if path else str(k))]
    return []


# ---- around the drill -----------------------------------------------------------------------------
def _excluded(name: str, exclude: Iterable[str]) -> bool:
    return any(name == x or name.rpartition(".")[2] == x for x in exclude)


async def fingerprint(data: Any, exclude: list[str]) -> dict[str, JSON]:
    """The live data's fingerprint per store (BackendError/FatalError when a store cannot be read)."""
    live: dict[str, JSON] = await data.live()
    out: dict[str, JSON] = {}
    for name, info in live.items():
        if info.get("kind") == "postgres":
            out[name] = {
                "kind": "postgres",
                "database": info["database"],
                **await _pg(data.snapshotters[name], exclude),
            }
        elif info.get("kind") == "qdrant":
            collection = str(info.get("collection"))
            points = (info.get("collections") or {}).get(info.get("alias"), {}).get("points")
            out[name] = {
                "kind": "qdrant",
                "alias": info.get("alias"),
                "collection": collection,
                **({} if _excluded(collection, exclude) else {"points": points}),
            }
    return out


async def _pg(snapshotter: Any, exclude: list[str]) -> JSON:
    from rollbackd.snapshots.pgtools import connect

    async with connect(snapshotter.dsn) as conn:
        oid = await conn.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = await conn.fetch(TABLES_SQL)
    return {
        "oid": int(oid),
        "tables": {
            r["name"]: [int(r["n_tup_ins"]), int(r["n_tup_upd"]), int(r["n_tup_del"]), int(r["filenode"] or 0)]
            for r in rows
            if not _excluded(r["name"], exclude)
        },
    }


def changes(before: Mapping[str, JSON], after: Mapping[str, JSON]) -> list[str]:
    """One sentence per difference between two fingerprints."""
    out: list[str] = []
    for store in sorted(set(before) | set(after)):
        old, new = before.get(store) or {}, after.get(store) or {}
        for key in sorted((set(old) | set(new)) - {"tables"}):
            if old.get(key) != new.get(key):
                out.append(f"{store}: {key} {old.get(key)} -> {new.get(key)}")
        old_t, new_t = old.get("tables") or {}, new.get("tables") or {}
        for table in sorted(set(old_t) | set(new_t)):
            if old_t.get(table) != new_t.get(table):
                out.append(
                    f"{store}: table {table} written (ins/upd/del/filenode {old_t.get(table)} -> {new_t.get(table)})"
                )
    return out
