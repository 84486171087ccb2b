"""The one write path on real PostgreSQL: concurrency, history chain, counts, outbox."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.auth.ratelimit import RateLimiter, Unlimited
from customer360.data.chain import STAGE_SUMMARY
from customer360.data.db import driver_pool
from customer360.data.uow import DriverUnitOfWork, SqlUnitOfWork
from customer360.lifecycle import ConfigProposal, DomainError, Reason, change_stages
from customer360.lifecycle.service import configure_stages
from customer360.tracing import TraceContext
from customer360.usecases import Limiter, UseCases
from tests.helpers import StageChanges, change, seal, use_cases
from tests.helpers import command as cmd


@pytest.fixture(params=["sqlalchemy", "asyncpg"], autouse=True)
async def stage_changes(request: pytest.FixtureRequest, engine: AsyncEngine) -> AsyncIterator[str]:
    """Every test here runs on both units of work: SQLAlchemy's (events, the CLI) and the
    asyncpg pool's (the gateway's stage changes), which send the same statements."""
    if request.param == "sqlalchemy":
        yield request.param
        return
    async with driver_pool(engine, 20) as pool:
        StageChanges.pool = pool
        try:
            yield request.param
        finally:
            StageChanges.pool = None


def unit_of_work(engine: AsyncEngine) -> SqlUnitOfWork | DriverUnitOfWork:
    pool = StageChanges.pool
    return SqlUnitOfWork(engine) if pool is None else DriverUnitOfWork(pool)


async def history(engine: AsyncEngine, tenant: str, cid: uuid.UUID) -> list:  # type: ignore[type-arg]
    async with engine.connect() as c:
        return list(
            await c.execute(
                text(
                    "SELECT version, from_stage, to_stage, changed_at FROM lifecycle_history_all "
                    "WHERE tenant_id = :t AND customer_id = :c ORDER BY version"
                ),
                {"t": tenant, "c": cid},
            )
        )


async def scalar(engine: AsyncEngine, sql: str, **params: object) -> object:
    async with engine.connect() as c:
        return (await c.execute(text(sql), params)).scalar()


def assert_unbroken(rows: list) -> None:  # type: ignore[type-arg]
    assert rows[0].from_stage is None
    for prev, row in itertools.pairwise(rows):
        assert row.from_stage == prev.to_stage
        assert row.version == prev.version + 1
        assert row.changed_at >= prev.changed_at


async def test_50_concurrent_updates_with_one_expected_version_let_exactly_one_win(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    # given a customer at version 1
    cid = await make_customer()
    # when 50 updates race, all expecting version 1
    targets = ["Onboarded", "Active"] * 25

    async def attempt(stage: str) -> object:
        try:
            return await change(engine, cmd(tenant, cid, stage, expected_version=1))
        except DomainError as err:
            return err

    outcomes = await asyncio.gather(*(attempt(s) for s in targets))
    # then exactly one succeeds, 49 conflict, and history has one new row
    errors = [o for o in outcomes if isinstance(o, DomainError)]
    assert len(errors) == 49 and {e.code.value for e in errors} == {"CONFLICT"}
    rows = await history(engine, tenant, cid)
    assert len(rows) == 2
    assert_unbroken(rows)


async def test_200_concurrent_unconditional_updates_all_land_in_an_unbroken_chain(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    cid = await make_customer()
    # Alternating targets: which of them are real moves depends on the order PostgreSQL grants
    # the row lock (a target equal to the current stage is a no-op), so the promise checked is
    # that no change is lost: every real move is one history row, one version, one link.
    stages = ["Onboarded", "Active"] * 100
    outcomes = await asyncio.gather(
        *(change(engine, cmd(tenant, cid, s)) for s in stages),
        return_exceptions=True,
    )
    moved = [o for o in outcomes if not isinstance(o, BaseException) and o.transition]
    noops = [o for o in outcomes if not isinstance(o, BaseException) and not o.transition]
    assert not [o for o in outcomes if isinstance(o, BaseException)]
    rows = await history(engine, tenant, cid)
    assert len(rows) == 1 + len(moved)
    assert_unbroken(rows)
    version = await scalar(
        engine, "SELECT version FROM customers WHERE tenant_id=:t AND id=:c", t=tenant, c=cid
    )
    assert version == 1 + len(moved)
    assert len(moved) + len(noops) == 200


async def test_every_change_writes_history_counts_and_an_outbox_row_in_one_transaction(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    cids = [await make_customer() for _ in range(3)]
    updated = await use_cases(engine).update_stages(
        [
            cmd(tenant, cids[0], "Active"),
            cmd(tenant, cids[1], "Churned"),  # no reason: refused
            cmd(tenant, cids[2], "At-Risk", reason_code="Low Engagement"),
        ],
    )
    out = updated.outcomes
    assert isinstance(out[1], DomainError)
    await seal(engine)  # what the gateway's sealer does after commit: links, counts, chain heads
    async with engine.connect() as c:
        counts = dict((await c.execute(text(STAGE_SUMMARY), {"t": tenant})).all())
        events = (
            await c.execute(
                text("SELECT key, payload FROM outbox WHERE tenant_id=:t ORDER BY id"),
                {"t": tenant},
            )
        ).all()
    assert counts == {"Prospect": 1, "Active": 1, "At-Risk": 1}
    # 3 creations + 2 moves, each one CloudEvent keyed by the customer
    assert len(events) == 5
    moves = [e.payload for e in events if e.payload["data"]["from_stage"] is not None]
    assert {(m["data"]["customer_id"], m["data"]["to_stage"]) for m in moves} == {
        (str(cids[0]), "Active"),
        (str(cids[2]), "At-Risk"),
    }
    for e in events:
        p = e.payload
        assert p["specversion"] == "1.0" and p["type"] == "audit.lifecycle.updated"
        assert p["tenantid"] == tenant and e.key == p["data"]["customer_id"]
        assert set(p["data"]) == {
            "transition_id",
            "customer_id",
            "from_stage",
            "to_stage",
            "changed_at",
            "changed_by",
            "reason_code",
            "source",
            "version",
            "chain",
        }
        assert set(p["data"]["chain"]) == {"position", "hash"}


async def test_a_failing_write_leaves_nothing_behind(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    # given a customer, and what the outbox and its history hold
    cid = await make_customer()
    outbox = "SELECT count(*) FROM outbox WHERE tenant_id=:t"
    changes = "SELECT count(*) FROM lifecycle_history_all WHERE tenant_id=:t"
    before = (await scalar(engine, outbox, t=tenant), await scalar(engine, changes, t=tenant))
    # when a change is written and its use case fails before the commit
    uow = unit_of_work(engine)
    with pytest.raises(RuntimeError):
        async with uow:
            (moved,) = await change_stages(uow.lifecycle, [cmd(tenant, cid, "Active")])
            assert not isinstance(moved, DomainError) and moved.transition is not None
            raise RuntimeError("boom before commit")
    # then nothing of it is left: no history, no outbox row, the customer where it was
    after = (await scalar(engine, outbox, t=tenant), await scalar(engine, changes, t=tenant))
    assert after == before
    stage = "SELECT stage, version FROM customers WHERE tenant_id=:t AND id=:c"
    async with engine.connect() as c:
        assert tuple((await c.execute(text(stage), {"t": tenant, "c": cid})).one()) == (
            "Prospect",
            1,
        )


async def test_a_change_given_up_on_while_it_waits_lands_whole_and_its_connection_is_clean(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    # given a customer whose row another transaction holds
    cid = await make_customer()
    uc = use_cases(engine)
    async with engine.connect() as holder:
        await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM customers WHERE tenant_id=:t AND id=:c FOR UPDATE"),
            {"t": tenant, "c": cid},
        )
        # when a change waits for that row and its caller gives up (its client went away)
        waiting = asyncio.create_task(uc.update_stages([cmd(tenant, cid, "Active")]))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert [r.to_stage for r in await history(engine, tenant, cid)] == ["Prospect"]
        await holder.rollback()
    # then its batch, which other requests may share, is written whole once the row frees
    # (customer360.batching), and the next changes (on the same connections) land whole
    for _ in range(50):
        if len(await history(engine, tenant, cid)) == 2:
            break
        await asyncio.sleep(0.05)
    for stage in ["Onboarded", "Active", "Onboarded"]:
        (outcome,) = (await uc.update_stages([cmd(tenant, cid, stage)])).outcomes
        assert not isinstance(outcome, DomainError)
    assert [r.to_stage for r in await history(engine, tenant, cid)] == [
        "Prospect",
        "Active",
        "Onboarded",
        "Active",
        "Onboarded",
    ]
    if StageChanges.pool is not None:  # no pooled connection is left inside a transaction
        pool = StageChanges.pool
        held = [await pool.acquire() for _ in range(pool.get_max_size())]
        try:
            assert not any(c.is_in_transaction() for c in held)
        finally:
            for c in held:
                await pool.release(c)


async def test_the_summary_stays_exact_while_concurrent_changes_wait_for_their_seal(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    a, b = await make_customer(), await make_customer()
    await change(engine, cmd(tenant, b, "Active"))

    async def populations(sql: str) -> dict[str, int]:
        async with engine.connect() as c:
            rows = (await c.execute(text(sql), {"t": tenant})).all()
        return {stage: int(n) for stage, n in rows if n}

    async def actual() -> dict[str, int]:
        return await populations(
            "SELECT stage, count(*) FROM customers WHERE tenant_id=:t GROUP BY stage"
        )

    # a: Prospect -> Active, b: Active -> Prospect, many times at once, while the summary is
    # read and a sealer links part of what has committed
    jobs = []
    for i in range(30):
        jobs.append(change(engine, cmd(tenant, a, ["Active", "Prospect"][i % 2])))
        jobs.append(change(engine, cmd(tenant, b, ["Prospect", "Active"][i % 2])))
    writing = asyncio.ensure_future(asyncio.wait_for(asyncio.gather(*jobs), timeout=30))
    checks = 0
    while not writing.done():
        # one statement, one snapshot: the summary against the customers themselves
        both = await populations(
            f"SELECT 's:' || stage, n FROM ({STAGE_SUMMARY}) s UNION ALL "
            "SELECT 'c:' || stage, count(*) FROM customers WHERE tenant_id=:t GROUP BY stage"
        )
        summary = {k[2:]: v for k, v in both.items() if k.startswith("s:")}
        assert summary == {k[2:]: v for k, v in both.items() if k.startswith("c:")}
        checks += 1
        if checks % 3 == 0:
            await seal(engine)
    await writing
    assert checks > 1
    assert await populations(STAGE_SUMMARY) == await actual()
    # and once everything is sealed, the count rows alone say the same
    await seal(engine)
    assert await populations("SELECT stage, count FROM stage_counts WHERE tenant_id=:t") == (
        await actual()
    )


async def test_a_change_waits_for_a_configuration_save_and_decides_on_the_saved_one(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    # given a tenant whose stages include Trial, and a customer in Prospect
    uc = use_cases(engine)
    await uc.configure_stages(tenant, "admin", ConfigProposal(stages=["Prospect", "Trial"]))
    cid = await make_customer()
    # when a save that removes Trial holds the configuration, not yet committed,
    async with unit_of_work(engine) as saving:
        await configure_stages(saving.lifecycle, tenant, "admin", ConfigProposal(["Prospect"]))
        # and a change to Trial is made meanwhile
        moving = asyncio.create_task(change(engine, cmd(tenant, cid, "Trial")))
        await asyncio.sleep(0.5)
        assert not moving.done()  # it waits for the save
        await saving.commit()
    # then the change is decided on the saved configuration (a read made before its lock was
    # granted would still see Trial), and the customer stays where it was
    with pytest.raises(DomainError) as refused:
        await moving
    assert refused.value.reason is Reason.INVALID_STAGE
    assert [r.to_stage for r in await history(engine, tenant, cid)] == ["Prospect"]


def batching_use_cases(engine: AsyncEngine, limiter: Limiter | None = None) -> UseCases:
    """One batch of a tenant at a time, so who shares a transaction is known."""
    uc = UseCases(engine, limiter=limiter or Unlimited(), write_batches=1)
    uc.pool = StageChanges.pool
    return uc


@contextlib.asynccontextmanager
async def row_held(engine: AsyncEngine, tenant: str, cid: uuid.UUID) -> AsyncIterator[None]:
    """Another transaction holds a customer's row until the block ends."""
    async with engine.connect() as holder:
        await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM customers WHERE tenant_id=:t AND id=:c FOR UPDATE"),
            {"t": tenant, "c": cid},
        )
        yield
        await holder.rollback()


async def test_requests_queued_behind_a_batch_share_one_transaction_each_with_its_own_outcome(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    # given a batch waiting for a customer's row
    a, b, held = await make_customer(), await make_customer(), await make_customer()
    uc = batching_use_cases(engine)
    async with row_held(engine, tenant, held):
        first = asyncio.create_task(uc.update_stages([cmd(tenant, held, "Onboarded")]))
        await asyncio.sleep(0.2)
        # when requests of five actors queue behind it, in this order
        asks = [
            cmd(tenant, a, "Onboarded", idempotency_key="k"),
            replace(cmd(tenant, b, "Onboarded", idempotency_key="k"), actor="user-2"),
            replace(cmd(tenant, a, "Active", expected_version=2), actor="user-3"),
            replace(cmd(tenant, a, "Prospect", expected_version=2), actor="user-4"),
            replace(cmd(tenant, b, "Nowhere"), actor="user-5"),
            cmd(tenant, a, "Onboarded", idempotency_key="k"),
        ]
        later = [asyncio.create_task(uc.update_stages([x])) for x in asks]
        await asyncio.sleep(0.1)
        assert not first.done() and not any(t.done() for t in later)
    await first
    out = [(await t).outcomes[0] for t in later]
    # then each gets what it would have got alone in that order: user-2's key "k" is its own,
    # user-3 sees user-1's change, user-4 is too late, user-5's stage is refused and
    # user-1's second request replays its first
    moved_a, moved_b, active, late, nowhere, replay = out
    assert not isinstance(moved_a, DomainError) and not isinstance(moved_b, DomainError)
    assert not isinstance(active, DomainError) and not isinstance(replay, DomainError)
    assert (moved_a.stage, moved_a.version, moved_b.version, active.version) == (
        "Onboarded",
        2,
        2,
        3,
    )
    assert isinstance(late, DomainError) and late.details.get("current_version") == 3
    assert isinstance(nowhere, DomainError) and nowhere.reason is Reason.INVALID_STAGE
    assert replay.replayed and replay.transition == moved_a.transition
    assert [r.to_stage for r in await history(engine, tenant, a)] == [
        "Prospect",
        "Onboarded",
        "Active",
    ]
    # and the queued requests' changes were written by one transaction
    xmins = (
        "SELECT DISTINCT xmin::text FROM customers WHERE tenant_id=:t AND version > 1 AND id <> :h"
    )
    async with engine.connect() as c:
        assert len((await c.execute(text(xmins), {"t": tenant, "h": held})).all()) == 1


async def test_requests_given_up_on_count_against_the_budget_only_for_what_they_changed(
    engine: AsyncEngine, tenant: str, make_customer, redis_url: str
) -> None:
    # given two requests of one user waiting for a customer's row, one of them a refused move
    cid = await make_customer()
    redis = aioredis.from_url(redis_url)
    limiter = RateLimiter(redis, limit=10)
    uc = batching_use_cases(engine, limiter)
    try:
        async with row_held(engine, tenant, cid):
            waiting = [
                asyncio.create_task(uc.update_stages([cmd(tenant, cid, "Active")])),
                asyncio.create_task(uc.update_stages([cmd(tenant, cid, "Nowhere")])),
            ]
            await asyncio.sleep(0.2)
            # when both callers give up while they wait
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
        # then the move is written once the row frees, and only it keeps its slot
        key = RateLimiter.key(tenant, "user-1")
        for _ in range(100):
            if len(await history(engine, tenant, cid)) == 2 and await redis.zcard(key) == 1:
                break
            await asyncio.sleep(0.05)
        assert [r.to_stage for r in await history(engine, tenant, cid)] == ["Prospect", "Active"]
        assert await redis.zcard(key) == 1
    finally:
        await redis.aclose()


async def test_each_request_in_a_shared_batch_keeps_its_own_trace_on_its_audit_event(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    # given two requests, each under a trace of its own, queued behind a waiting batch
    a, b, held = await make_customer(), await make_customer(), await make_customer()
    traces = {
        a: TraceContext("00-" + "a" * 32 + "-" + "1" * 16 + "-01", "k=a"),
        b: TraceContext("00-" + "b" * 32 + "-" + "2" * 16 + "-01"),
    }
    uc = batching_use_cases(engine)
    async with row_held(engine, tenant, held):
        first = asyncio.create_task(uc.update_stages([cmd(tenant, held, "Onboarded")]))
        await asyncio.sleep(0.2)
        later = [
            asyncio.create_task(uc.update_stages([cmd(tenant, c, "Active", origin=t)]))
            for c, t in traces.items()
        ]
        await asyncio.sleep(0.1)
    await asyncio.gather(first, *later)
    await seal(engine)
    # then each audit event names its own request's trace
    rows = (
        "SELECT o.key, o.traceparent, o.tracestate FROM outbox o "
        "JOIN lifecycle_history h ON h.id = o.history_id "
        "WHERE o.tenant_id = :t AND o.key <> :h AND h.version = 2"
    )
    async with engine.connect() as c:
        got = {
            k: TraceContext(p, s)
            for k, p, s in await c.execute(text(rows), {"t": tenant, "h": str(held)})
        }
    assert got == {str(c): t for c, t in traces.items()}
