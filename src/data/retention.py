"""Rows kept only while they serve: idempotency keys for the contract's 24 hours, and the
marks of processed events for longer than Kafka keeps a record (a redelivery must still be
known as one). Forgotten in bounded batches by the relay leader's sweep."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# CONTRACT section 4: keys belong to (tenant, sub) for 24 hours.
IDEMPOTENCY_HOURS = 24
BATCH = 10_000
MAX_BATCHES = 50  # per sweep: a backlog is worked off over several sweeps, never in one lock

_EXPIRED_KEYS = text(
    "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM idempotency_keys "
    "WHERE created_at < now() - make_interval(hours => :hours) LIMIT :n))"
)
_OLD_MARKS = text(
    "DELETE FROM processed_events WHERE ctid = ANY(ARRAY(SELECT ctid FROM processed_events "
    "WHERE processed_at < now() - make_interval(days => :days) LIMIT :n))"
)


async def forget_expired(conn: AsyncConnection, processed_days: int) -> tuple[int, int]:
    """Delete expired idempotency keys and old processed-event marks, in the caller's
    (system-scoped, autocommit) connection; returns how many of each."""
    counts = []
    for statement, params in (
        (_EXPIRED_KEYS, {"hours": IDEMPOTENCY_HOURS}),
        (_OLD_MARKS, {"days": processed_days}),
    ):
        total = 0
        for _ in range(MAX_BATCHES):
            result = await conn.execute(statement, {**params, "n": BATCH})
            await conn.commit()
            total += int(result.rowcount or 0)
            if (result.rowcount or 0) < BATCH:
                break
        counts.append(total)
    return counts[0], counts[1]
