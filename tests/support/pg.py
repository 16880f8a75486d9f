"""Throw-away databases on the real PostgreSQL 15 server of the test machine.

The server runs at 127.0.0.1:5432 with trust auth for the superuser `postgres` (override the admin DSN with
ROLLBACKD_TEST_PG_ADMIN_DSN). Every test gets its own uniquely named database and drops it afterwards,
together with the copies a rollback makes of it (`<name>__rb_<id>`, `<name>__pre_<incident>`).

If the server does not answer, the test fails (never skips): a missing server is a missing install step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import secrets
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import asyncpg
import pytest

ADMIN_DSN = os.environ.get("ROLLBACKD_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
_BASE = ADMIN_DSN.rsplit("/", 1)[0]
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

T = TypeVar("T")

__all__ = [
    "ADMIN_DSN",
    "admin_connect",
    "database_exists",
    "db_name",
    "drop_database",
    "drop_database_sync",
    "dsn_for",
    "fresh_database",
    "fresh_database_sync",
    "pg_dsn",
]


def dsn_for(name: str) -> str:
    """The DSN of database `name` on the test server."""
    return f"{_BASE}/{name}"


def db_name(dsn: str) -> str:
    """The database name at the end of a DSN made by dsn_for/fresh_database."""
    return dsn.rsplit("/", 1)[1].split("?", 1)[0]


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"not a safe database name: {name!r}")
    return name


def _quote(name: str) -> str:
    return '"' + _check_name(name) + '"'


async def admin_connect() -> asyncpg.Connection:
    """A superuser connection to the maintenance database; pytest.fail when the server is down."""
    try:
        return await asyncpg.connect(ADMIN_DSN, timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_DSN}: {exc!r}. Install the Debian package `postgresql` "
            "and start it (`pg_ctlcluster 15 main start`); the tests need a real server.",
            pytrace=False,
        )


async def fresh_database(prefix: str = "rbt") -> str:
    """Create an empty, uniquely named database and return its DSN."""
    clean = re.sub(r"[^a-z0-9_]", "_", prefix.lower())[:30] or "rbt"
    if clean[0].isdigit():
        clean = "d" + clean
    name = _check_name(f"{clean}_{os.getpid()}_{secrets.token_hex(4)}")
    conn = await admin_connect()
    try:
        await conn.execute(f"CREATE DATABASE {_quote(name)}")
    finally:
        await conn.close()
    return dsn_for(name)


async def database_exists(name: str) -> bool:
    conn = await admin_connect()
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def drop_database(name: str, *, related: bool = True) -> list[str]:
    """Drop `name` (a name or a DSN), terminating its backends first.

    With `related`, databases named `<name>__*` (the restore-aside and pre-swap copies a rollback leaves)
    go too. Returns the names dropped. Missing databases are not an error.
    """
    if "/" in name:
        name = db_name(name)
    _check_name(name)
    conn = await admin_connect()
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname = $1", name)
        if related:
            pattern = name.replace("_", r"\_") + r"\_\_%"
            rows += await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", pattern)
        names = [str(r["datname"]) for r in rows]
        for target in names:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                target,
            )
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote(target)} WITH (FORCE)")
        return names
    finally:
        await conn.close()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop runs in this thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def fresh_database_sync(prefix: str = "rbt") -> str:
    return _run(fresh_database(prefix))


def drop_database_sync(name: str, *, related: bool = True) -> list[str]:
    return _run(drop_database(name, related=related))


@pytest.fixture
async def pg_dsn(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """DSN of a fresh, empty database; dropped (with its rollback copies) after the test."""
    dsn = await fresh_database(request.node.name[:20])
    try:
        yield dsn
    finally:
        await drop_database(dsn)
