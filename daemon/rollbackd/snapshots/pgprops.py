"""What belongs to a database itself rather than to its contents, and is lost by a dump restored into a
database rollbackd created (pg_dump writes it only with --create): owner, ACL (a REVOKE CONNECT FROM PUBLIC
would silently become "anyone may connect"), comment, connection limit, ``ALTER DATABASE ... SET`` and
``ALTER ROLE ... IN DATABASE ... SET``. Read from the live database, applied onto the restored copy before
the swap. Also the checks that forbid a rename swap (logical replication slots, subscriptions)."""

from __future__ import annotations

from typing import Any

from rollbackd.records import JSON
from rollbackd.snapshots.pgtools import ident, literal

# Settings whose value is a list that pg_dump splits and quotes element by element (GUC_LIST_QUOTE).
_LIST_SETTINGS = frozenset({"search_path", "temp_tablespaces", "session_preload_libraries",
                            "local_preload_libraries", "shared_preload_libraries"})


async def read(conn: Any, database: str) -> JSON:
    row = await conn.fetchrow(
        "SELECT d.oid, pg_get_userbyid(d.datdba) AS owner, d.datconnlimit AS connlimit, d.datacl::text[] AS acl,"
        " shobj_description(d.oid, 'pg_database') AS comment FROM pg_database d WHERE d.datname = $1", database)
    if row is None:
        return {}
    grants = await conn.fetch(
        "SELECT coalesce(pg_get_userbyid(nullif(a.grantee, 0)), 'PUBLIC') AS grantee, a.privilege_type,"
        " a.is_grantable FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1"
        " ORDER BY 1, 2", database)
    settings = await conn.fetch(
        "SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '') AS role, s.setconfig FROM pg_db_role_setting s"
        " WHERE s.setdatabase = $1 ORDER BY 1", row["oid"])
    return {
        "owner": row["owner"],
        "connection_limit": row["connlimit"],
        "acl": list(row["acl"]) if row["acl"] is not None else None,
        "grants": [{"grantee": g["grantee"], "privilege": g["privilege_type"], "grantable": g["is_grantable"]}
                   for g in grants] if row["acl"] is not None else None,
        "comment": row["comment"],
        "settings": {s["role"] or "*": list(s["setconfig"] or []) for s in settings},
    }


def split_list(value: str) -> list[str]:
    """``"$user", public`` -> ['$user', 'public'] (pg_dump's SplitGUCList)."""
    items: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            j, buf = i + 1, []
            while j < n:
                if value[j] == '"' and j + 1 < n and value[j + 1] == '"':
                    buf.append('"')
                    j += 2
                elif value[j] == '"':
                    break
                else:
                    buf.append(value[j])
                    j += 1
            items.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and value[j] != ",":
                j += 1
            items.append(value[i:j].strip())
            i = j
    return items


def set_clause(entry: str) -> str:
    """``search_path=app, public`` -> ``search_path = 'app', 'public'`` (as pg_dump writes it)."""
    name, _, value = entry.partition("=")
    if name.lower() in _LIST_SETTINGS:
        return f"{ident(name)} = " + ", ".join(literal(v) for v in split_list(value))
    return f"{ident(name)} = {literal(value)}"


def apply_statements(target: str, props: JSON, current: JSON) -> list[str]:
    """SQL that gives ``target`` the properties ``props`` (read from the live database); ``current`` are
    the target's own (reset first, so the result is exactly the live one's)."""
    db = ident(target)
    out = [f"ALTER DATABASE {db} OWNER TO {ident(props['owner'])}",
           f"ALTER DATABASE {db} CONNECTION LIMIT {int(props['connection_limit'])}",
           f"COMMENT ON DATABASE {db} IS " + (literal(props["comment"]) if props.get("comment") else "NULL")]
    if props.get("grants") is not None:
        out.append(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
        owners = {props["owner"], current.get("owner")} - {None}
        out += [f"REVOKE ALL ON DATABASE {db} FROM {ident(o)}" for o in sorted(owners)]
        for g in props["grants"]:
            grantee = "PUBLIC" if g["grantee"] == "PUBLIC" else ident(g["grantee"])
            option = " WITH GRANT OPTION" if g["grantable"] and grantee != "PUBLIC" else ""
            out.append(f"GRANT {g['privilege']} ON DATABASE {db} TO {grantee}{option}")
    for role in current.get("settings", {}):
        out.append(f"ALTER DATABASE {db} RESET ALL" if role == "*" else
                   f"ALTER ROLE {ident(role)} IN DATABASE {db} RESET ALL")
    for role, entries in props.get("settings", {}).items():
        prefix = f"ALTER DATABASE {db}" if role == "*" else f"ALTER ROLE {ident(role)} IN DATABASE {db}"
        out += [f"{prefix} SET {set_clause(e)}" for e in entries]
    return out


async def apply(conn: Any, target: str, props: JSON) -> int:
    """Apply in one transaction; returns the number of statements."""
    current = await read(conn, target)
    statements = apply_statements(target, props, current)
    async with conn.transaction():
        for sql in statements:
            await conn.execute(sql)
    return len(statements)


async def swap_blockers(conn: Any, database: str) -> list[str]:
    """Why a rename swap must not happen: logical replication slots and subscriptions stay with the old
    database (by OID), so after a rename they would silently serve the wrong one."""
    reasons: list[str] = []
    slots = await conn.fetch("SELECT slot_name FROM pg_replication_slots WHERE database = $1 AND "
                             "slot_type = 'logical' ORDER BY 1", database)
    if slots:
        reasons.append("logical replication slot(s) " + ", ".join(r["slot_name"] for r in slots))
    subs = await conn.fetch("SELECT s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                            "WHERE d.datname = $1 ORDER BY 1", database)
    if subs:
        reasons.append("subscription(s) " + ", ".join(r["subname"] for r in subs))
    return reasons
