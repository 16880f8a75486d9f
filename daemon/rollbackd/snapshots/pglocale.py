"""The snapshot's database, not the server's default: encoding, collation, ctype, locale provider and ICU
locale are read at snapshot time (manifest ``database_locale``) and the restore-aside copy is created from
template0 with them. An ICU ``en-US`` database restored as libc ``C.UTF-8`` sorts differently; a
``SQL_ASCII`` one restored as UTF8 holds bytes that ``upper()`` and regexes reject, and the row counts
still match. A server that cannot create such a database refuses before anything live changes."""

from __future__ import annotations

import json
from typing import Any

from rollbackd.errors import FatalError
from rollbackd.records import JSON
from rollbackd.snapshots.pgtools import ident, literal

_PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}


async def read(conn: Any, database: str) -> JSON:
    """The database's locale as recorded in pg_database (column names differ across versions: to_jsonb)."""
    raw = await conn.fetchval("SELECT to_jsonb(d) - 'datacl' FROM pg_database d WHERE d.datname = $1", database)
    row = json.loads(raw) if isinstance(raw, str) else raw
    if not row:
        return {}
    encoding = await conn.fetchval("SELECT pg_encoding_to_char($1::int)", int(row["encoding"]))
    return {
        "encoding": str(encoding),
        "lc_collate": row.get("datcollate"),
        "lc_ctype": row.get("datctype"),
        "locale_provider": _PROVIDERS.get(str(row.get("datlocprovider") or "c"), "libc"),
        "icu_locale": row.get("daticulocale") or row.get("datlocale"),
        "icu_rules": row.get("daticurules"),
    }


def create_sql(target: str, locale: JSON, server_major: int) -> str:
    """CREATE DATABASE ... TEMPLATE template0 with ``locale`` (as read by ``read``)."""
    sql = f"CREATE DATABASE {ident(target)} TEMPLATE template0"
    if locale.get("encoding"):
        sql += f" ENCODING {literal(str(locale['encoding']))}"
    for key, clause in (("lc_collate", "LC_COLLATE"), ("lc_ctype", "LC_CTYPE")):
        if locale.get(key):
            sql += f" {clause} {literal(str(locale[key]))}"
    provider = locale.get("locale_provider") or "libc"
    if server_major >= 15:
        sql += f" LOCALE_PROVIDER {provider}"
    if provider == "icu" and locale.get("icu_locale"):
        sql += f" ICU_LOCALE {literal(str(locale['icu_locale']))}"
    if provider == "icu" and locale.get("icu_rules"):
        sql += f" ICU_RULES {literal(str(locale['icu_rules']))}"
    if provider == "builtin" and locale.get("icu_locale"):
        sql += f" BUILTIN_LOCALE {literal(str(locale['icu_locale']))}"
    return sql


async def create(admin: Any, target: str, locale: JSON, server_major: int) -> None:
    """Create the copy like the snapshot's database; a server that cannot is a FatalError naming why."""
    import asyncpg

    try:
        await admin.execute(create_sql(target, locale, server_major))
    except asyncpg.PostgresError as exc:
        described = ", ".join(f"{k} {v}" for k, v in locale.items() if v)
        raise FatalError(
            f"this server cannot create a database like the snapshot's ({described}): "
            f"{type(exc).__name__}: {exc}; refused, nothing live changed"
        ) from exc
