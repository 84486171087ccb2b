"""A read cancelled at any moment never hands its connection on inside a transaction."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text

from customer360.data.db import driver_pool, make_engine
from customer360.data.queries import Reads

PAUSES = (0.0, 0.001, 0.005, 0.02)


async def cancel_twice(reads: Reads, tenant: str, pause: float) -> None:
    """A read cancelled in the middle, and again `pause` later while it is cleaned up."""
    task = asyncio.create_task(reads._all("SELECT pg_sleep(2), CAST(:t AS text)", {"t": tenant}))
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.sleep(pause)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_read_cancelled_twice_leaves_no_transaction_to_the_next_user(
    app_database_url: str, tenant: str
) -> None:
    # given one pooled connection, so the next user gets the very same one
    engine = make_engine(app_database_url, pool_size=1, max_overflow=0)
    reads = Reads(engine)
    try:
        for pause in PAUSES:
            # when a read is cancelled in the middle, and again while it rolls back
            await cancel_twice(reads, tenant, pause)
            # then the next user of the pool is outside any transaction: what it commits stays
            async with engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw is not None and not raw.is_in_transaction()
                assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_a_read_cancelled_on_the_read_pool_leaves_its_connection_usable(
    app_database_url: str, tenant: str
) -> None:
    # given a read pool of one connection, so the next read gets the very same one
    engine = make_engine(app_database_url)
    try:
        async with driver_pool(engine, 1) as pool:
            reads = Reads(engine, pool=pool)
            for pause in PAUSES:
                # when a read is cancelled in the middle, and again while it is cleaned up
                await cancel_twice(reads, tenant, pause)
                # then the next user gets it at once (the sleep was cancelled on the server
                # too), outside any transaction
                async with asyncio.timeout(1.5), pool.acquire() as conn:
                    assert not conn.is_in_transaction()
                    assert await conn.fetchval("SELECT 1") == 1
    finally:
        await engine.dispose()
