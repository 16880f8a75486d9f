"""PostgreSQL journal through asyncpg: for a state that outlives the host, shared by HA peers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from rollbackd.errors import FencedError, IncidentActiveError, StateError
from rollbackd.records import Alert, Decision, Event
from rollbackd.state import fence
from rollbackd.state.bulk import alerts_with_lines
from rollbackd.state.sql import SqlStateStore, Statement

# Everything asyncpg raises when the server is unreachable, slow or refuses: all become StateError.
_DRIVER_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_ONE_ACTIVE = "rb_incidents_one_active"
_ONE_STATEMENT_ROWS = 200  # a storm's batches; a 4,000-alert body takes the transaction (parameter limit)


def _translate(where: str, exc: BaseException) -> StateError:
    if isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name == _ONE_ACTIVE:
        return IncidentActiveError(f"{where}: {exc}")
    if isinstance(exc, TimeoutError):
        return StateError(f"{where}: no answer in time (timeout)")
    return StateError(f"{where}: {exc}" if str(exc) else f"{where}: {type(exc).__name__}")


class PostgresStateStore(SqlStateStore):
    serial_type = "BIGSERIAL PRIMARY KEY"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        dsn: SecretStr  # credential-bearing: from ${ENV} only, never printed
        min_size: int = Field(default=1, ge=1)
        max_size: int = Field(default=5, ge=1)
        timeout: float = 10.0
        # A transaction left open by a paused or cut replica is ended by the server after this long,
        # so the locks it holds (the fencing check's) never block the replica taking over for longer.
        idle_in_transaction_timeout: float = Field(default=5.0, gt=0)

    def __init__(self, options: Options) -> None:
        self.options = options
        self._pool: asyncpg.Pool | None = None

    def _where(self) -> str:
        # Never log the DSN: it may carry a password.
        return "postgres state store"

    async def _connect(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.options.dsn.get_secret_value(),
                min_size=self.options.min_size,
                max_size=self.options.max_size,
                timeout=self.options.timeout,
                command_timeout=self.options.timeout,
                server_settings={
                    "idle_in_transaction_session_timeout": str(int(self.options.idle_in_transaction_timeout * 1000))
                },
            )
        except _DRIVER_ERRORS as exc:
            raise StateError(f"{self._where()}: cannot connect: {exc!r}") from exc

    async def _close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StateError(f"{self._where()} is not open")
        return self._pool

    async def _execute(self, sql: str, *args: Any) -> None:
        if fence.current.get() is not None:
            await self._atomic([(sql, args)])
            return
        try:
            await self.pool.execute(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise _translate(self._where(), exc) from exc

    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if fence.current.get() is not None and not sql.lstrip().startswith("SELECT"):  # reads harm nobody
            return await self._atomic([(sql, args)])
        try:
            return [dict(r) for r in await self.pool.fetch(sql, *args)]
        except _DRIVER_ERRORS as exc:
            raise _translate(self._where(), exc) from exc

    async def _journal_unique(self, unique: Sequence[tuple[Alert, str | None, float, Decision, Event]]) -> set[str]:
        """A storm's batch in one statement, atomic by itself (no BEGIN, COMMIT): one round trip, not four.
        A fenced write (a leader's) keeps its transaction, where the lease is checked."""
        if len(unique) > _ONE_STATEMENT_ROWS or fence.current.get() is not None:
            return await super()._journal_unique(unique)
        sql, args = alerts_with_lines(unique)
        try:
            return {r["key"] for r in await self.pool.fetch(sql, *args)}
        except _DRIVER_ERRORS as exc:
            raise _translate(self._where(), exc) from exc

    async def _atomic(self, statements: Sequence[Statement]) -> list[dict[str, Any]]:
        async def run(conn: asyncpg.Connection) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            for sql, args in statements:
                rows = [dict(r) for r in await conn.fetch(sql, *args)]
            return rows

        return await self._transaction(run)

    async def _atomic_then(
        self, first: Sequence[Statement], then: Callable[[list[dict[str, Any]]], Sequence[Statement]]
    ) -> list[dict[str, Any]]:
        async def run(conn: asyncpg.Connection) -> list[dict[str, Any]]:
            rows = [dict(r) for sql, args in first for r in await conn.fetch(sql, *args)]
            for sql, args in then(rows):
                await conn.execute(sql, *args)
            return rows

        return await self._transaction(run)

    async def _transaction(
        self, work: Callable[[asyncpg.Connection], Awaitable[list[dict[str, Any]]]]
    ) -> list[dict[str, Any]]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await _check_fence(conn, fence.current.get())
                return await work(conn)
        except _DRIVER_ERRORS as exc:
            raise _translate(self._where(), exc) from exc


async def _check_fence(conn: asyncpg.Connection, token: int | None) -> None:
    """In the write's own transaction: the lease row still carries ``token``. FOR SHARE holds an
    acquisition by another replica until this transaction ends, so no write of a stale leader lands
    after a new leader read the journal."""
    if token is None:
        return
    current = await conn.fetchval(f"SELECT token FROM rb_leader WHERE name = '{fence.LEADER_ROW}' FOR SHARE")
    if current != token:
        raise FencedError(
            f"fenced: this replica's lease token {token} is stale (the lease is at {current}); another replica leads"
        )
