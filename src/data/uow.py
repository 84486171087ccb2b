"""The unit of work: one connection, one transaction; it alone commits."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from customer360.observability import TRANSITIONS

from .customers import CustomerRepository
from .lifecycle import SqlLifecycleRepository

CommitHook = Callable[[str, Iterable[uuid.UUID]], None]


class SqlUnitOfWork:
    """Re-entrant, so an event handler and `change_stages` share one transaction.

    Only the outermost `commit()` commits; leaving without it rolls back.
    """

    lifecycle: SqlLifecycleRepository
    customers: CustomerRepository

    def __init__(self, engine: AsyncEngine, on_commit: CommitHook | None = None) -> None:
        self._engine = engine
        self._on_commit = on_commit
        self._conn: AsyncConnection | None = None
        self._depth = 0
        self.committed = False

    @property
    def connection(self) -> AsyncConnection:
        assert self._conn is not None, "unit of work not entered"
        return self._conn

    async def __aenter__(self) -> Self:
        if self._depth == 0:
            self._conn = await self._engine.connect()
            await self._conn.begin()
            self.committed = False
            self.lifecycle = SqlLifecycleRepository(self._conn)
            self.customers = CustomerRepository(self._conn)
        self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        conn, self._conn = self._conn, None
        assert conn is not None
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()

    async def commit(self) -> None:
        if self._depth == 1:
            await self.connection.commit()
            self.committed = True
            touched: dict[str, set[uuid.UUID]] = {}
            for t in self.lifecycle.recorded:
                TRANSITIONS.labels(t.source.value).inc()
                touched.setdefault(t.tenant_id, set()).add(t.customer_id)
            for tenant, cid in self.customers.touched:
                touched.setdefault(tenant, set()).add(cid)
            self.lifecycle.recorded.clear()
            self.customers.touched.clear()
            if self._on_commit is not None:
                for tenant, ids in touched.items():
                    self._on_commit(tenant, ids)
