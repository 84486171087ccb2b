"""The tamper-evident history on real PostgreSQL: append-only, hash-chained per tenant."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.data.audit import verify
from tests.helpers import change, seal
from tests.helpers import command as move

# The tenant's chain lock, as c360_seal takes it (migration 0011), held by a session.
CHAIN_LOCK = text("SELECT pg_advisory_lock(hashtextextended('history-chain:' || :t, 0))")
CHAIN_UNLOCK = text("SELECT pg_advisory_unlock(hashtextextended('history-chain:' || :t, 0))")


async def chain(engine: AsyncEngine, tenant: str) -> list:  # type: ignore[type-arg]
    """The tenant's history in chain order, once the sealer has linked what was committed."""
    await seal(engine)
    async with engine.connect() as c:
        return list(
            await c.execute(
                text(
                    "SELECT id, seq, chain_pos, prev_hash, row_hash FROM lifecycle_history "
                    "WHERE tenant_id = :t ORDER BY chain_pos"
                ),
                {"t": tenant},
            )
        )


async def busy_tenant(engine: AsyncEngine, make_customer, tenant: str, n: int = 8) -> None:  # type: ignore[no-untyped-def]
    ids = [await make_customer(tenant) for _ in range(n)]
    stages = ["Onboarded", "Active", "Onboarded", "Active"]

    async def walk(cid: uuid.UUID) -> None:
        for stage in stages:
            await change(engine, move(tenant, cid, stage))

    await asyncio.gather(*(walk(c) for c in ids))


@pytest.fixture
def fresh_tenant() -> str:
    return f"audit-{uuid.uuid4().hex[:8]}"


async def test_concurrent_writers_and_sealers_build_one_unbroken_chain_in_seal_order(
    engine: AsyncEngine, make_customer, fresh_tenant: str
) -> None:
    # given 8 customers each walked through 4 stages by concurrent transactions, while two
    # sealers link what has committed, over and over
    writing = asyncio.ensure_future(busy_tenant(engine, make_customer, fresh_tenant))
    batches = 0

    async def sealing() -> None:
        nonlocal batches
        while not writing.done():
            batches += bool(await seal(engine))
            await asyncio.sleep(0)

    await asyncio.gather(writing, sealing(), sealing())
    # then positions run 1..N, each row links to the one before, and the replay order (seq)
    # is the chain order: both were handed out as rows were sealed, not as they were inserted
    rows = await chain(engine, fresh_tenant)
    assert len(rows) == 8 * 5 and batches > 1
    assert [r.chain_pos for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0].prev_hash == bytes(32)
    for prev, row in itertools.pairwise(rows):
        assert row.prev_hash == prev.row_hash
        assert row.seq > prev.seq
    # and each customer's changes are in the chain in the order they were made
    async with engine.connect() as c:
        versions = await c.execute(
            text(
                "SELECT customer_id, array_agg(version ORDER BY chain_pos) AS v "
                "FROM lifecycle_history WHERE tenant_id = :t GROUP BY customer_id"
            ),
            {"t": fresh_tenant},
        )
        assert all(r.v == sorted(r.v) for r in versions)
    verdict = await verify(engine, fresh_tenant)
    assert verdict.broken == [] and verdict.rows == len(rows) and verdict.unsealed == 0


async def test_history_refuses_update_delete_and_truncate_even_for_its_owner(
    engine: AsyncEngine, make_customer, fresh_tenant: str
) -> None:
    # given a customer with sealed history, and a connection as the owner (a superuser here)
    await make_customer(fresh_tenant)
    await seal(engine)
    for sql in (
        "UPDATE lifecycle_history SET to_stage = 'Churned' WHERE tenant_id = :t",
        "DELETE FROM lifecycle_history WHERE tenant_id = :t",
        "TRUNCATE lifecycle_history",
    ):
        # when it tries to rewrite history, then the database refuses
        async with engine.connect() as c:
            with pytest.raises(DBAPIError, match="append-only"):
                await c.execute(text(sql), {"t": fresh_tenant})
    assert len(await chain(engine, fresh_tenant)) == 1


async def tamper(engine: AsyncEngine, sql: str, **params: object) -> None:
    # A superuser can switch triggers off: exactly what the chain must still reveal.
    async with engine.begin() as c:
        await c.execute(text("SET LOCAL session_replication_role = replica"))
        await c.execute(text(sql), params)


async def test_an_altered_row_is_named_by_verify(
    engine: AsyncEngine, make_customer, fresh_tenant: str
) -> None:
    # given a healthy chain
    await busy_tenant(engine, make_customer, fresh_tenant, n=3)
    rows = await chain(engine, fresh_tenant)
    victim = rows[5]
    # when a superuser rewrites one row's stage behind the triggers' back
    await tamper(
        engine,
        "UPDATE lifecycle_history SET to_stage = 'Churned' WHERE id = :id",
        id=victim.id,
    )
    # then verify names exactly that row
    verdict = await verify(engine, fresh_tenant)
    assert [(b.row_id, b.position) for b in verdict.broken] == [(victim.id, victim.chain_pos)]
    assert "altered" in verdict.broken[0].why


async def test_a_removed_row_and_a_cut_tail_are_both_detected(
    engine: AsyncEngine, make_customer, fresh_tenant: str
) -> None:
    await busy_tenant(engine, make_customer, fresh_tenant, n=2)
    rows = await chain(engine, fresh_tenant)
    # when a row in the middle is deleted, then the row after it is named
    await tamper(engine, "DELETE FROM lifecycle_history WHERE id = :id", id=rows[3].id)
    (broken,) = (await verify(engine, fresh_tenant)).broken
    assert broken.row_id == rows[4].id

    other = f"{fresh_tenant}-tail"
    await busy_tenant(engine, make_customer, other, n=2)
    rows = await chain(engine, other)
    # when the newest rows are deleted (nothing after them to break a link), the head says so
    await tamper(
        engine, "DELETE FROM lifecycle_history WHERE id = ANY(:ids)", ids=[r.id for r in rows[-2:]]
    )
    (broken,) = (await verify(engine, other)).broken
    assert broken.position == len(rows) - 2 and "removed from the end" in broken.why


async def test_the_chain_head_travels_in_each_audit_event(
    engine: AsyncEngine, make_customer, fresh_tenant: str
) -> None:
    cid = await make_customer(fresh_tenant)
    await change(engine, move(fresh_tenant, cid, "Onboarded"))
    await seal(engine)
    async with engine.connect() as c:
        pairs = list(
            await c.execute(
                text(
                    "SELECT o.payload -> 'data' -> 'chain' AS chain, h.chain_pos, h.row_hash "
                    "FROM outbox o JOIN lifecycle_history h ON h.tenant_id = o.tenant_id "
                    "AND h.seq = o.history_seq WHERE o.tenant_id = :t ORDER BY h.chain_pos"
                ),
                {"t": fresh_tenant},
            )
        )
    assert len(pairs) == 2
    for p in pairs:
        assert p.chain == {"position": p.chain_pos, "hash": p.row_hash.hex()}


async def test_replay_positions_and_chain_links_follow_commit_order_not_insert_order(
    engine: AsyncEngine, fresh_tenant: str
) -> None:
    insert = text(
        "INSERT INTO lifecycle_history (id, tenant_id, customer_id, version, from_stage, "
        "to_stage, changed_at, changed_by, source, config_version) "
        "VALUES (:id, :t, :c, 1, NULL, 'Prospect', now(), 'u', 'SYSTEM', 1)"
    )
    a, b = uuid.uuid4(), uuid.uuid4()
    # given transaction A that inserted its history row first but has not committed
    async with engine.connect() as first:
        await first.begin()
        await first.execute(insert, {"id": a, "t": fresh_tenant, "c": uuid.uuid4()})
        # when B inserts later and commits first (it does not wait for A)
        async with engine.begin() as second:
            await second.execute(insert, {"id": b, "t": fresh_tenant, "c": uuid.uuid4()})
        await first.commit()
    # then B comes first in replay order and in the chain: a subscriber that resumed after
    # B's position still receives A, and the chain verifies
    rows = await chain(engine, fresh_tenant)
    assert [r.id for r in rows] == [b, a]
    assert rows[0].seq < rows[1].seq and rows[1].prev_hash == rows[0].row_hash
    assert (await verify(engine, fresh_tenant)).broken == []


async def test_an_altered_row_with_a_recomputed_hash_is_still_the_one_named(
    engine: AsyncEngine, make_customer, fresh_tenant: str
) -> None:
    await busy_tenant(engine, make_customer, fresh_tenant, n=2)
    rows = await chain(engine, fresh_tenant)
    for victim in (rows[2], rows[-1]):  # in the middle, and the newest row
        # when a superuser alters a row and recomputes its hash to cover it up
        await tamper(
            engine,
            "UPDATE lifecycle_history h SET changed_by = 'mallory', "
            "row_hash = c360_history_digest(h.prev_hash, "
            "ROW(h.id, h.tenant_id, h.customer_id, h.version, h.from_stage, h.to_stage, "
            "h.changed_at, 'mallory', h.reason_code, h.source, h.config_version, h.seq, "
            "h.chain_pos, h.prev_hash, h.row_hash)::lifecycle_history) WHERE id = :id",
            id=victim.id,
        )
        # then verify still names that row: the next row (or the chain head) holds the original
        (broken,) = (await verify(engine, fresh_tenant)).broken
        assert (broken.row_id, broken.position) == (victim.id, victim.chain_pos)
        assert "recomputed" in broken.why
        await tamper(  # put it back for the next round
            engine,
            "UPDATE lifecycle_history SET changed_by = 'user-1', row_hash = :h WHERE id = :id",
            id=victim.id,
            h=victim.row_hash,
        )


async def test_a_row_not_yet_linked_cannot_be_rewritten_before_its_commit_either(
    engine: AsyncEngine, fresh_tenant: str
) -> None:
    # given a transaction holding a history row that its commit has not linked yet
    async with engine.connect() as c:
        await c.begin()
        await c.execute(
            text(
                "INSERT INTO lifecycle_history (id, tenant_id, customer_id, version, "
                "from_stage, to_stage, changed_at, changed_by, source, config_version) "
                "VALUES (:id, :t, :c, 1, NULL, 'Prospect', now(), 'u', 'SYSTEM', 1)"
            ),
            {"id": uuid.uuid4(), "t": fresh_tenant, "c": uuid.uuid4()},
        )
        # when that same transaction tries to rewrite it, then it is refused: only the
        # commit step itself may fill in the links
        with pytest.raises(DBAPIError, match="append-only"):
            await c.execute(
                text("UPDATE lifecycle_history SET to_stage = 'Churned' WHERE tenant_id = :t"),
                {"t": fresh_tenant},
            )


async def test_rows_left_unsealed_too_long_fail_verify_and_pass_once_sealed(
    engine: AsyncEngine, make_customer, fresh_tenant: str
) -> None:
    # given a committed change that no sealer has linked: the tenant's chain lock held here,
    # so that no sealer (the session's gateway runs one) can link it meanwhile
    cid = await make_customer(fresh_tenant)
    await seal(engine)
    async with engine.connect() as holder:
        await holder.execute(CHAIN_LOCK, {"t": fresh_tenant})
        await holder.commit()  # a session lock: it outlives this transaction
        await change(engine, move(fresh_tenant, cid, "Onboarded"))
        # when the chain is verified, then it passes while the change is recent
        verdict = await verify(engine, fresh_tenant)
        assert verdict.broken == [] and verdict.rows == 1 and verdict.unsealed == 1
        # and fails once the change has waited longer than allowed, saying what is wrong (not
        # tampering)
        verdict = await verify(engine, fresh_tenant, stale_seconds=0)
        (broken,) = verdict.broken
        assert not broken.tampered and "not sealed" in broken.why and verdict.unsealed == 1
        assert verdict.rows == 1  # the sealed part still verified
        await holder.execute(CHAIN_UNLOCK, {"t": fresh_tenant})
        await holder.commit()
    # and once a sealer has run (this one, or the gateway's first), it verifies whole
    await seal(engine)
    verdict = await verify(engine, fresh_tenant)
    assert verdict.broken == [] and verdict.rows == 2 and verdict.unsealed == 0


async def test_the_digest_is_computed_in_place_by_the_statements_that_use_it(
    engine: AsyncEngine,
) -> None:
    # given the chain's one digest, called as the seal and `c360 audit verify` call it
    async with engine.connect() as c:
        plan = (
            await c.execute(
                text(
                    "EXPLAIN VERBOSE SELECT c360_history_digest(h.prev_hash, h) "
                    "FROM lifecycle_history h"
                )
            )
        ).scalars()
        output = [line for line in plan if "Output:" in line]
    # then PostgreSQL inlines its body (migration 0015): no query of its own for every row
    assert output and all("sha256" in line for line in output), output
    assert not any("c360_history_digest" in line for line in output), output
