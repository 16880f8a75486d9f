"""What belongs to a database itself rather than to its contents, and is lost by a dump restored into a
database rollbackd created (pg_dump writes it only with --create): owner, ACL (a REVOKE CONNECT FROM PUBLIC
would silently become "anyone may connect"), comment, connection limit, ``ALTER DATABASE ... SET`` and
``ALTER ROLE ... IN DATABASE ... SET``. Recorded at snapshot time and, by default, applied onto the restored
copy during prepare (a rollback rolls them back too: a ``search_path`` the bad release damaged must not
survive it); ``properties: live`` reads them from the live database at the swap instead. ACL entries keep
their grantor where it exists (granted under SET ROLE, as pg_dump does). Also the checks that forbid a
rename swap (logical replication slots, subscriptions)."""

from __future__ import annotations

from typing import Any

from rollbackd.records import JSON
from rollbackd.snapshots.pgtools import ident, literal

# Settings whose value is a list that pg_dump splits and quotes element by element (GUC_LIST_QUOTE).
_LIST_SETTINGS = frozenset(
    {
        "search_path",
        "temp_tablespaces",
        "session_preload_libraries",
        "local_preload_libraries",
        "shared_preload_libraries",
    }
)


async def read(conn: Any, database: str) -> JSON:
    row = await conn.fetchrow(
        "SELECT d.oid, pg_get_userbyid(d.datdba) AS owner, d.datconnlimit AS connlimit, d.datacl::text[] AS acl,"
        " shobj_description(d.oid, 'pg_database') AS comment FROM pg_database d WHERE d.datname = $1",
        database,
    )
    if row is None:
        return {}
    grants = await conn.fetch(
        "SELECT coalesce(pg_get_userbyid(nullif(a.grantee, 0)), 'PUBLIC') AS grantee, a.privilege_type,"
        " a.is_grantable, pg_get_userbyid(a.grantor) AS grantor FROM pg_database d, aclexplode(d.datacl) a"
        " WHERE d.datname = $1 ORDER BY 1, 2",
        database,
    )
    settings = await conn.fetch(
        "SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '') AS role, s.setconfig FROM pg_db_role_setting s"
        " WHERE s.setdatabase = $1 ORDER BY 1",
        row["oid"],
    )
    return {
        "owner": row["owner"],
        "connection_limit": row["connlimit"],
        "acl": list(row["acl"]) if row["acl"] is not None else None,
        "grants": [
            {
                "grantee": g["grantee"],
                "privilege": g["privilege_type"],
                "grantable": g["is_grantable"],
                "grantor": g["grantor"],
            }
            for g in grants
        ]
        if row["acl"] is not None
        else None,
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


def ordered_grants(grants: list[JSON], owner: str) -> list[tuple[JSON, str | None]]:
    """Each grant with the role to grant it as (None: as the owner), in an order where every grantor holds
    the grant option when its turn comes; a grant whose grantor never does is made by the owner."""
    able = {(owner, g["privilege"]) for g in grants}
    todo, out = list(grants), list[tuple[JSON, str | None]]()
    while todo:
        ready = [g for g in todo if (g.get("grantor") or owner, g["privilege"]) in able]
        if not ready:
            out += [(g, None) for g in todo]
            break
        for g in ready:
            grantor = g.get("grantor") or owner
            out.append((g, None if grantor == owner else grantor))
            if g["grantable"]:
                able.add((g["grantee"], g["privilege"]))
            todo.remove(g)
    return out


def _grant_statements(db: str, props: JSON, current: JSON) -> list[str]:
    out = [f"REVOKE ALL ON DATABASE {db} FROM PUBLIC"]
    owners = {str(o) for o in (props.get("owner"), current.get("owner")) if o}
    out += [f"REVOKE ALL ON DATABASE {db} FROM {ident(o)}" for o in sorted(owners)]
    for g, grantor in ordered_grants(props["grants"], props.get("owner") or current.get("owner") or ""):
        grantee = "PUBLIC" if g["grantee"] == "PUBLIC" else ident(g["grantee"])
        option = " WITH GRANT OPTION" if g["grantable"] and grantee != "PUBLIC" else ""
        grant = f"GRANT {g['privilege']} ON DATABASE {db} TO {grantee}{option}"
        out += [f"SET ROLE {ident(grantor)}", grant, "RESET ROLE"] if grantor else [grant]
    return out


def apply_statements(target: str, props: JSON, current: JSON) -> list[str]:
    """SQL that gives ``target`` the properties ``props``; ``current`` are the target's own (reset first, so
    the result is exactly ``props``)."""
    db = ident(target)
    out = [f"ALTER DATABASE {db} OWNER TO {ident(props['owner'])}"] if props.get("owner") else []
    out += [
        f"ALTER DATABASE {db} CONNECTION LIMIT {int(props['connection_limit'])}",
        f"COMMENT ON DATABASE {db} IS " + (literal(props["comment"]) if props.get("comment") else "NULL"),
    ]
    if props.get("grants") is not None:
        out += _grant_statements(db, props, current)
    for role in current.get("settings", {}):
        out.append(
            f"ALTER DATABASE {db} RESET ALL" if role == "*" else f"ALTER ROLE {ident(role)} IN DATABASE {db} RESET ALL"
        )
    for role, entries in props.get("settings", {}).items():
        prefix = f"ALTER DATABASE {db}" if role == "*" else f"ALTER ROLE {ident(role)} IN DATABASE {db}"
        out += [f"{prefix} SET {set_clause(e)}" for e in entries]
    return out


def usable(props: JSON, roles: set[str], members: set[str]) -> tuple[JSON, list[str]]:
    """``props`` without what names a role missing on this server, and with the grantors this login cannot
    act as replaced by the owner; plus what was left out, for the report."""
    skipped: list[str] = []
    out = dict(props)
    if props.get("owner") and props["owner"] not in roles:
        skipped.append(f"owner {props['owner']} (no such role)")
        out["owner"] = None
    if props.get("grants") is not None:
        grants = []
        for g in props["grants"]:
            if g["grantee"] != "PUBLIC" and g["grantee"] not in roles:
                skipped.append(f"grant {g['privilege']} to {g['grantee']} (no such role)")
                continue
            grants.append(g if g.get("grantor") in members else {**g, "grantor": None})
        out["grants"] = grants
    settings = props.get("settings") or {}
    out["settings"] = {r: v for r, v in settings.items() if r == "*" or r in roles}
    skipped += [f"settings of role {r} (no such role)" for r in settings if r not in out["settings"]]
    return out, skipped


def changes(live: JSON, applied: JSON) -> JSON:
    """What the rollback changed in the database's own properties: ``{property: {live, snapshot}}``."""
    out: JSON = {}
    for key in ("owner", "connection_limit", "comment", "acl"):
        before, after = live.get(key), applied.get(key)
        if key == "acl":  # the same entries in another order are the same ACL
            before, after = sorted(before or []) or before, sorted(after or []) or after
        if key in applied and before != after:
            out[key] = {"live": before, "snapshot": after}
    live_settings, new_settings = live.get("settings") or {}, applied.get("settings") or {}
    for role in sorted(set(live_settings) | set(new_settings)):
        if sorted(live_settings.get(role, [])) != sorted(new_settings.get(role, [])):
            name = "settings" if role == "*" else f"settings of {role}"
            out[name] = {"live": live_settings.get(role, []), "snapshot": new_settings.get(role, [])}
    return out


async def apply(conn: Any, target: str, props: JSON) -> JSON:
    """Apply in one transaction; returns the statement count and what was left out (missing roles)."""
    roles = {
        r["rolname"]: r["member"]
        for r in await conn.fetch("SELECT rolname, pg_has_role(current_user, oid, 'MEMBER') AS member FROM pg_roles")
    }
    wanted, skipped = usable(props, set(roles), {r for r, member in roles.items() if member})
    statements = apply_statements(target, wanted, await read(conn, target))
    async with conn.transaction():
        for sql in statements:
            await conn.execute(sql)
    return {"statements": len(statements), "skipped": skipped}


async def swap_blockers(conn: Any, database: str) -> list[str]:
    """Why a rename swap must not happen: logical replication slots and subscriptions stay with the old
    database (by OID), so after a rename they would silently serve the wrong one."""
    reasons: list[str] = []
    slots = await conn.fetch(
        "SELECT slot_name FROM pg_replication_slots WHERE database = $1 AND slot_type = 'logical' ORDER BY 1", database
    )
    if slots:
        reasons.append("logical replication slot(s) " + ", ".join(r["slot_name"] for r in slots))
    subs = await conn.fetch(
        "SELECT s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
        "WHERE d.datname = $1 ORDER BY 1",
        database,
    )
    if subs:
        reasons.append("subscription(s) " + ", ".join(r["subname"] for r in subs))
    return reasons
