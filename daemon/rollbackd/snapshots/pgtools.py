"""Plumbing for the Postgres backend: the DSN split for child processes, running pg_dump/pg_restore
(argv, no shell, the password only in PGPASSWORD), their version check, asyncpg connections with errors
translated into rollbackd's (connection refused, permission denied, ...)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from rollbackd import childenv, procs
from rollbackd.errors import BackendError, FatalError

_LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
}
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, slots=True)
class Dsn:
    host: str
    port: int
    user: str | None
    password: str | None
    database: str
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, dsn: str) -> Dsn:
        parts = urlsplit(dsn)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("expected postgresql://user:password@host:port/database")
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise ValueError("the DSN must name the database (…/database)")
        params = tuple((k, v[-1]) for k, v in parse_qs(parts.query).items())
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            database=database,
            params=params,
        )

    def url(self, database: str | None = None) -> str:
        """The asyncpg DSN of another database on the same server (not for logs: may hold the password)."""
        auth = ""
        if self.user:
            from urllib.parse import quote

            auth = quote(self.user, safe="") + (f":{quote(self.password, safe='')}" if self.password else "") + "@"
        query = "&".join(f"{k}={v}" for k, v in self.params)
        return f"postgresql://{auth}{self.host}:{self.port}/{database or self.database}" + (
            f"?{query}" if query else ""
        )

    def where(self, database: str | None = None) -> str:
        """For messages: host:port/database, never the password."""
        return f"{self.host}:{self.port}/{database or self.database}"

    def argv(self, database: str) -> list[str]:
        """Connection flags for pg_dump/pg_restore (no password)."""
        out = ["-h", self.host, "-p", str(self.port), "-d", database]
        return out + (["-U", self.user] if self.user else [])

    def env(self) -> dict[str, str]:
        env = childenv.inherited()  # never the daemon's PG* variables nor its tokens
        if self.password:
            env["PGPASSWORD"] = self.password
        for key, value in self.params:
            if key in _LIBPQ_ENV:
                env[_LIBPQ_ENV[key]] = value
        return env


def tool_path(name: str, bin_dir: str | None) -> str:
    path = shutil.which(name, path=bin_dir) if bin_dir else shutil.which(name)
    if path is None:
        where = f" in {bin_dir}" if bin_dir else " on PATH"
        raise FatalError(
            f"{name} not found{where}: install the PostgreSQL client of the server's major version "
            "(Debian: postgresql-client-15) or set `pg_bin_dir`"
        )
    return path


async def tool_major(path: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        path, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    found = _VERSION.search(out.decode(errors="replace"))
    if proc.returncode != 0 or not found:
        raise FatalError(f"{path} --version did not answer like a PostgreSQL tool: {out[:200]!r}")
    return int(found.group(1))


async def check_tool(name: str, bin_dir: str | None, server_major: int) -> str:
    """The tool's path, or FatalError when it is missing or older than the server (pg_dump refuses a newer
    server; a dump of a newer pg_dump may not restore)."""
    path = tool_path(name, bin_dir)
    major = await tool_major(path)
    if major < server_major:
        raise FatalError(
            f"{name} is version {major} but the server is version {server_major}: install "
            f"postgresql-client-{server_major} or point `pg_bin_dir` at it"
        )
    return path


async def run_tool(argv: list[str], env: dict[str, str], what: str) -> float:
    """Run a PostgreSQL tool in its own process group (rollbackd.procs: killed with the step, dies with
    the daemon, journaled for a resumed step); its stderr tail becomes the error. Returns seconds taken."""
    started = time.monotonic()
    done = await procs.run(argv, env=env, keep=64 * 1024)
    if done.code != 0:
        text = done.err.decode(errors="replace").strip()
        raise tool_error(what, done.code, text)
    return time.monotonic() - started


def tool_error(what: str, code: int, stderr: str) -> BackendError | FatalError:
    tail = " | ".join(line for line in stderr.splitlines()[-4:] if line.strip())[-600:]
    lowered = stderr.lower()
    if "permission denied" in lowered or "must be owner" in lowered:
        return FatalError(f"{what}: permission denied (the role needs to own the database and have CREATEDB): {tail}")
    if "connection refused" in lowered or "could not connect" in lowered:
        return BackendError("postgres", f"{what}: connection refused: {tail}", retryable=True)
    if "no space left" in lowered:
        return FatalError(f"{what}: no space left on device: {tail}")
    if "server version mismatch" in lowered or "unsupported version" in lowered:
        return FatalError(f"{what}: wrong tool version: {tail}")
    return BackendError("postgres", f"{what} exited {code}: {tail}")


def map_pg_error(exc: BaseException, dsn: Dsn, database: str | None = None) -> Exception:
    """asyncpg and OS errors -> rollbackd errors naming the server and database (never the password)."""
    import asyncpg

    where = dsn.where(database)
    if isinstance(exc, ConnectionRefusedError) or (isinstance(exc, OSError) and exc.errno == 111):
        return BackendError("postgres", f"{where}: connection refused (is the server running?)", retryable=True)
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return FatalError(f"postgres {where}: permission denied: {exc}")
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return FatalError(f"postgres {where}: authentication failed: {exc}")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return FatalError(f"postgres {where}: database does not exist")
    if isinstance(exc, TimeoutError | OSError):
        return BackendError("postgres", f"{where}: cannot connect: {exc!r}", retryable=True)
    if isinstance(exc, asyncpg.PostgresError):
        return BackendError("postgres", f"{where}: {type(exc).__name__}: {exc}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


@contextlib.asynccontextmanager
async def connect(
    dsn: Dsn, database: str | None = None, *, timeout: float = 10.0, settings: dict[str, str] | None = None
) -> AsyncIterator[Any]:
    """An asyncpg connection (``settings``: server settings such as lock_timeout); every asyncpg/OS error
    inside the block comes out translated."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn.url(database), timeout=timeout, server_settings=settings)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise map_pg_error(exc, dsn, database) from exc
    try:
        yield conn
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise map_pg_error(exc, dsn, database) from exc
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(conn.close(timeout=5))


def ident(name: str) -> str:
    """Quote an identifier (database names come from config and ids we made; still never trust them)."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
