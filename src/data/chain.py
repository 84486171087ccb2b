"""The history chain, sealed after commit (migrations 0011 and 0017, docs/WRITE_PATH.md).

A stage change commits its whole change queued in `history_unsealed` and leaves the
tenant's stage counts alone: no lock every change of a tenant must queue on through its WAL
flush. The sealer links the queued changes in batches (`c360_seal`): it inserts each history
row with its replay seq, chain position and hash, and its audit event's outbox row with the
chain fields, applies the count deltas, deletes the queue rows, and wakes the relays. Until
then a change counts in the summary as a delta, and its history reads from the queue
(`lifecycle_history_all`).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

# Writers say "wake the sealer" here, after their commit (never inside it: a NOTIFY in a
# writing transaction queues on PostgreSQL's cluster-wide notify lock through the flush).
SEAL_CHANNEL = "c360_unsealed"
WAKE_SEALER = f"SELECT pg_notify('{SEAL_CHANNEL}', '')"

# Every change of a customer's history, sealed or still queued (migration 0017): in any
# snapshot a change is in exactly one of the two tables. Replay and the chain read only
# `lifecycle_history`, which holds what is sealed.
ALL_HISTORY = "lifecycle_history_all"

# Rows one seal links in one transaction (one WAL flush).
SEAL_BATCH = 5_000

# A row committed longer ago than this and still unlinked means no sealer is running.
STALE_SECONDS = 60

# The tenant's stage populations, exact in one snapshot: the sealed counts plus the deltas
# of the changes queued for their seal (the seal applies a change's delta to the counts and
# takes it off the queue in one transaction). The queue, not `chain_pos IS NULL` on the
# history: every sealed row leaves a dead entry there until the history is vacuumed, so that
# scan grows with all the changes ever sealed (250 ms after 475,000 with autovacuum off).
STAGE_SUMMARY = (
    "SELECT stage, sum(n)::bigint AS n FROM ("
    "SELECT stage, count AS n FROM stage_counts WHERE tenant_id = :t "
    "UNION ALL SELECT d.stage, d.n FROM history_unsealed u "
    "CROSS JOIN LATERAL (VALUES (u.to_stage, 1), (u.from_stage, -1)) AS d(stage, n) "
    "WHERE u.tenant_id = :t AND d.stage IS NOT NULL"
    ") x GROUP BY stage"
)

_UNSEALED_TENANTS = "SELECT DISTINCT tenant_id FROM history_unsealed"
_SEAL = "SELECT sealed FROM c360_seal($1, $2)"


async def seal_all(conn: AsyncConnection, batch: int = SEAL_BATCH) -> int:
    """Seal every tenant's committed unlinked rows, up to `batch` per tenant, each tenant in
    a transaction of its own; returns how many. `conn` is in autocommit and reads across
    tenants (system scope). On its asyncpg connection itself, as the relay's drains: the
    sealer drains after most commits, and SQLAlchemy's statement machinery cost more than
    these two statements' own work."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    sealed = 0
    for (tenant,) in await raw.fetch(_UNSEALED_TENANTS):
        sealed += int(await raw.fetchval(_SEAL, tenant, batch))
    return sealed
