"""The unit of work: one connection, one transaction; it alone commits."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from customer360.observability import TRANSITIONS

from .customers import CustomerRepository
from .lifecycle import SqlLifecycleRepository

# (tenant, {customer: cache generation}): iterating it gives the customers.
CommitHook = Callable[[str, Mapping[uuid.UUID, int]], None]


class SqlUnitOfWork:
    """Entered once by one use case, which commits once; leaving without `commit()` rolls
    back. After the commit, `on_commit` learns which customers changed (read-your-writes),
    and `on_history` that history waits to be sealed (events/sealer.py)."""

    lifecycle: SqlLifecycleRepository
    customers: CustomerRepository

    def __init__(
        self,
        engine: AsyncEngine,
        on_commit: CommitHook | None = None,
        on_history: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._on_commit = on_commit
        self._on_history = on_history
        self._conn: AsyncConnection | None = None
        self.committed = False

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
        self.lifecycle = SqlLifecycleRepository(self._conn)
        self.customers = CustomerRepository(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()

    async def commit(self) -> None:
        if self.committed:
            raise RuntimeError("a unit of work commits once")
        await self.connection.commit()
        self.committed = True
        # Per tenant: each touched customer and the cache generation its change leads to.
        touched: dict[str, dict[uuid.UUID, int]] = {}
        written = self.lifecycle.generations
        for t in self.lifecycle.recorded:
            TRANSITIONS.labels(t.source.value).inc()
            gens = touched.setdefault(t.tenant_id, {})
            gens[t.customer_id] = max(gens.get(t.customer_id, 0), written.get(t.customer_id, 0))
        for tenant, cid, gen in self.customers.touched:
            gens = touched.setdefault(tenant, {})
            gens[cid] = max(gens.get(cid, 0), gen)
        if self._on_history is not None and self.lifecycle.recorded:
            self._on_history()
        if self._on_commit is not None:
            for tenant, ids in touched.items():
                self._on_commit(tenant, ids)
