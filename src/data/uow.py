"""The units of work: one connection, one transaction; each alone commits.

`SqlUnitOfWork` (SQLAlchemy) serves every use case. `DriverUnitOfWork` serves the API's stage
changes, on asyncpg's own pool: the same statements at about half the use case's CPU per
change (docs/WRITE_PATH.md, "The gateway's share")."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from customer360.observability import TRANSITIONS

from .customers import CustomerRepository
from .lifecycle import SqlLifecycleRepository
from .statements import AlchemyExecutor, DriverExecutor, StatementSpan

# (tenant, {customer: cache generation}): iterating it gives the customers.
CommitHook = Callable[[str, Mapping[uuid.UUID, int]], None]


class _UnitOfWork:
    """Entered once by one use case, which commits once; leaving without `commit()` rolls
    back. After the commit, `on_commit` learns which customers changed (read-your-writes),
    and `on_history` that history waits to be sealed (events/sealer.py)."""

    lifecycle: SqlLifecycleRepository

    def __init__(self, on_commit: CommitHook | None, on_history: Callable[[], None] | None) -> None:
        self._on_commit = on_commit
        self._on_history = on_history
        self.committed = False

    async def _commit(self) -> None:
        raise NotImplementedError

    async def _end(self) -> None:
        """Roll back what was not committed, and give the connection back."""
        raise NotImplementedError

    def _customers_touched(self) -> Iterable[tuple[str, uuid.UUID, int]]:
        return ()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._end()

    async def commit(self) -> None:
        if self.committed:
            raise RuntimeError("a unit of work commits once")
        await self._commit()
        self.committed = True
        _committed(self.lifecycle, self._customers_touched(), self._on_commit, self._on_history)


class SqlUnitOfWork(_UnitOfWork):
    """On a SQLAlchemy connection: every use case's repositories."""

    customers: CustomerRepository

    def __init__(
        self,
        engine: AsyncEngine,
        on_commit: CommitHook | None = None,
        on_history: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(on_commit, on_history)
        self._engine = engine
        self._conn: AsyncConnection | None = None

    @property
    def connection(self) -> AsyncConnection:
        assert self._conn is not None, "unit of work not entered"
        return self._conn

    async def __aenter__(self) -> Self:
        if self._conn is not None:
            raise RuntimeError("a unit of work is entered once")
        self._conn = await self._engine.connect()
        await self._conn.begin()
        self.committed = False
        self.lifecycle = SqlLifecycleRepository(AlchemyExecutor(self._conn))
        self.customers = CustomerRepository(self._conn)
        return self

    async def _end(self) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()

    async def _commit(self) -> None:
        await self.connection.commit()

    def _customers_touched(self) -> Iterable[tuple[str, uuid.UUID, int]]:
        return self.customers.touched


class DriverUnitOfWork(_UnitOfWork):
    """For stage changes, on a connection of asyncpg's own pool. A connection whose rollback
    failed (a cancelled statement, a broken socket) is reset or dropped by the pool on
    release, never handed out inside a transaction."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        on_commit: CommitHook | None = None,
        on_history: Callable[[], None] | None = None,
        span: StatementSpan | None = None,
    ) -> None:
        super().__init__(on_commit, on_history)
        self._pool = pool
        self._span = span
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None

    async def __aenter__(self) -> Self:
        if self._conn is not None:
            raise RuntimeError("a unit of work is entered once")
        conn = await self._pool.acquire()
        try:
            tx = conn.transaction()
            await tx.start()
        except BaseException:
            await self._pool.release(conn)
            raise
        self._conn, self._tx = conn, tx
        self.committed = False
        self.lifecycle = SqlLifecycleRepository(DriverExecutor(conn, self._span))
        return self

    async def _end(self) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        try:
            if not self.committed and not conn.is_closed():
                await self._tx.rollback()
        finally:
            await self._pool.release(conn)

    async def _commit(self) -> None:
        assert self._conn is not None, "unit of work not entered"
        await self._tx.commit()


def _committed(
    lifecycle: SqlLifecycleRepository,
    customers_touched: Iterable[tuple[str, uuid.UUID, int]],
    on_commit: CommitHook | None,
    on_history: Callable[[], None] | None,
) -> None:
    """After a commit: metrics, the sealer's wake, and per tenant each touched customer with
    the cache generation its change leads to (read-your-writes)."""
    touched: dict[str, dict[uuid.UUID, int]] = {}
    written = lifecycle.generations
    for t in lifecycle.recorded:
        TRANSITIONS.labels(t.source.value).inc()
        gens = touched.setdefault(t.tenant_id, {})
        gens[t.customer_id] = max(gens.get(t.customer_id, 0), written.get(t.customer_id, 0))
    for tenant, cid, gen in customers_touched:
        gens = touched.setdefault(tenant, {})
        gens[cid] = max(gens.get(cid, 0), gen)
    if on_history is not None and lifecycle.recorded:
        on_history()
    if on_commit is not None:
        for tenant, ids in touched.items():
            on_commit(tenant, ids)
