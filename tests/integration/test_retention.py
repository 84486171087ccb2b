"""Storage that stays bounded: expired idempotency keys and old processed-event marks are
forgotten by the relay leader's sweep, and nothing inside its window is."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.data.retention import forget_expired
from customer360.lifecycle import ChangeResult, DomainError, Reason
from customer360.usecases import Outcome
from tests.helpers import apply_event, command, renewed_event, use_cases


async def _age(engine: AsyncEngine, sql: str, **params: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


async def _sweep(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("SELECT set_config('app.scope', 'system', false)"))
        return await forget_expired(conn, processed_days=14)


async def test_idempotency_keys_expire_after_24_hours_and_not_before(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    # given two keyed changes, one made 25 hours ago and one 23 hours ago
    usecases = use_cases(engine)
    old, recent = await make_customer(), await make_customer()
    for cid, key in ((old, "k-old"), (recent, "k-recent")):
        (done,) = (
            await usecases.update_stages([command(tenant, cid, "Active", idempotency_key=key)])
        ).outcomes
        assert isinstance(done, ChangeResult)
    for key, hours in (("k-old", 25), ("k-recent", 23)):
        await _age(
            engine,
            "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => :h) "
            "WHERE tenant_id = :t AND key = :k",
            h=hours,
            t=tenant,
            k=key,
        )
    # when the sweep runs
    keys, _ = await _sweep(engine)
    # then the old key is gone and the recent one still answers
    assert keys >= 1
    async with engine.connect() as conn:
        left = (
            await conn.execute(
                text("SELECT key FROM idempotency_keys WHERE tenant_id = :t"), {"t": tenant}
            )
        ).scalars()
        assert sorted(left) == ["k-recent"]
    (replay,) = (
        await usecases.update_stages(
            [command(tenant, recent, "Active", idempotency_key="k-recent")]
        )
    ).outcomes
    assert isinstance(replay, ChangeResult) and replay.replayed
    (reused,) = (
        await usecases.update_stages(
            [command(tenant, recent, "Onboarded", idempotency_key="k-recent")]
        )
    ).outcomes
    assert isinstance(reused, DomainError) and reused.reason is Reason.IDEMPOTENCY_KEY_REUSED


async def test_processed_event_marks_are_forgotten_after_the_retention(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    # given two consumed events, processed 15 and 13 days ago (the retention is 14)
    cid = await make_customer()
    old, recent = renewed_event(tenant, cid), renewed_event(tenant, cid, contract_id="K2")
    for ev, days in ((old, 15), (recent, 13)):
        assert await apply_event(engine, ev) is Outcome.APPLIED
        await _age(
            engine,
            "UPDATE processed_events SET processed_at = now() - make_interval(days => :d) "
            "WHERE source = :s AND event_id = :i",
            d=days,
            s=ev["source"],
            i=ev["id"],
        )
    # when the sweep runs
    _, marks = await _sweep(engine)
    # then the old mark is gone, and the recent event is still known as seen
    assert marks >= 1
    async with engine.connect() as conn:
        ids = (
            await conn.execute(
                text("SELECT event_id FROM processed_events WHERE tenant_id = :t AND type = :y"),
                {"t": tenant, "y": "contract.renewed"},
            )
        ).scalars()
        assert sorted(ids) == [recent["id"]]
    assert await apply_event(engine, recent) is Outcome.DUPLICATE
    assert uuid.UUID(recent["data"]["customer_id"]) == cid
