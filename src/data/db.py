"""The async engine: one per process, built in the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from customer360.observability import get_logger

from .keys import OPTION, TenantKeys

log = get_logger("customer360.db")


def _no_transaction_on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pooled connection must never hand a transaction to its next user: a read cancelled
    at the wrong moment on the driver itself (asyncpg's own transaction) can return its
    connection still inside it, and the next unit of work would then only write savepoints
    of that transaction, never committed. Such a connection is dropped (its transaction dies
    with it) and the pool hands out another."""
    raw = getattr(dbapi_connection, "driver_connection", None)
    if raw is not None and raw.is_closed():  # terminated by a cancelled read (data/queries.py)
        raise DisconnectionError("pooled connection closed")
    is_in_transaction = getattr(raw, "is_in_transaction", None)
    if is_in_transaction is not None and is_in_transaction():
        log.error("pooled connection still inside a transaction; dropped")
        raise DisconnectionError("pooled connection still inside a transaction")


# asyncpg's own settings, for the engine's connections and the read pool's alike: its
# prepared-statement cache makes repeat queries one round trip.
_CONNECT_ARGS: dict[str, Any] = {"statement_cache_size": 512, "server_settings": {"jit": "off"}}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 10, keys: TenantKeys | None = None
) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        # Bound values (a searched email, say) never reach an exception's text, nor the logs.
        hide_parameters=True,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
        connect_args=_CONNECT_ARGS,
    )
    event.listen(engine.sync_engine.pool, "checkout", _no_transaction_on_checkout)
    # Every connection of this engine can seal and open encrypted fields (data/keys.py).
    return engine if keys is None else engine.execution_options(**{OPTION: keys})


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    """Neither a read nor a stage change leaves anything on its session: their tenant
    settings are transaction-local, their locks transaction-level. asyncpg itself still
    rolls back a transaction left open and waits out a cancelled query before the
    connection is used again."""


@contextlib.asynccontextmanager
async def driver_pool(engine: AsyncEngine, size: int) -> AsyncIterator[asyncpg.Pool]:
    """asyncpg's own pool, to the engine's database as the engine's role, for the hot
    paths: `Reads`' single statements and stage changes (uow.DriverUnitOfWork). A checkout
    from SQLAlchemy's pool costs three greenlet switches and its events: 57-76 us of CPU
    against 19 us for this one, timed on the bench box (docs/COMPILED_QUERIES.md)."""
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    # min_size 0: no connection before the first read (the gateway starts, and says it is
    # not ready, while PostgreSQL is away)
    pool = await asyncpg.create_pool(
        min_size=0, max_size=size, reset=_nothing_to_reset, **_CONNECT_ARGS, **kwargs
    )
    try:
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), 10)
        except TimeoutError:  # a read that never ends must not hold the stop
            pool.terminate()


# What bulk loads fill: the planner must know their sizes before the first query, or it
# plans for empty tables (4-6x slower reads and writes after `c360 seed`, until autovacuum).
LOADED_TABLES = (
    "customers",
    "lifecycle_history",
    "customer_metrics",
    "stage_counts",
    "processed_events",
    "outbox",
)


async def analyze(engine: AsyncEngine, tables: tuple[str, ...] = LOADED_TABLES) -> None:
    """ANALYZE after a bulk load. Needs the tables' owner (the migration URL): for another
    role PostgreSQL skips a table with a warning."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in tables:
            # table names come from the constant above, never from input
            await conn.exec_driver_sql(f"ANALYZE {table}")
