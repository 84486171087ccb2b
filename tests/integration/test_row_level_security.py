"""Row-level security as the application's role sees it: defence behind `WHERE tenant_id`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.auth.ratelimit import Unlimited
from customer360.data.db import driver_pool, make_engine
from customer360.data.keys import TenantKeys
from customer360.data.queries import CustomerFilterSpec, Reads
from customer360.data.scope import tenant_scope
from customer360.lifecycle import DomainError
from customer360.settings import Settings
from customer360.usecases import UseCases
from tests.helpers import command


@pytest.fixture
async def app_engine(app_database_url: str, settings: Settings) -> AsyncIterator[AsyncEngine]:
    # A small pool, so 400 requests must share (and could leak through) 3 connections.
    e = make_engine(
        app_database_url, pool_size=3, max_overflow=0, keys=TenantKeys(settings.keyring())
    )
    yield e
    await e.dispose()


async def test_every_tenant_table_forces_a_tenant_policy(engine: AsyncEngine) -> None:
    async with engine.connect() as c:
        rows = (
            await c.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
                    "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies "
                    "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
                    "WHERE a.attname = 'tenant_id' AND c.relkind = 'r' "
                    "AND c.relnamespace = 'public'::regnamespace"
                )
            )
        ).all()
    assert len(rows) >= 12
    assert [r.relname for r in rows if not (r.relrowsecurity and r.relforcerowsecurity)] == []
    assert [r.relname for r in rows if r.policies < 1] == []


async def test_a_query_that_forgets_its_tenant_still_sees_only_that_tenant(
    app_engine: AsyncEngine, make_customer
) -> None:
    a, b = f"rls-a-{uuid.uuid4().hex[:6]}", f"rls-b-{uuid.uuid4().hex[:6]}"
    await make_customer(a)
    await make_customer(b)
    async with app_engine.begin() as c:
        await tenant_scope(c, a)
        # no tenant predicate at all, the bug RLS is there to contain
        seen = {r[0] for r in await c.execute(text("SELECT DISTINCT tenant_id FROM customers"))}
        assert seen == {a}
        with pytest.raises(Exception, match="row-level security"):
            await c.execute(
                text("INSERT INTO stage_counts (tenant_id, stage, count) VALUES (:t, 'X', 1)"),
                {"t": b},
            )
    async with app_engine.connect() as c:
        # no scope: nothing at all
        assert (await c.execute(text("SELECT count(*) FROM customers"))).scalar() == 0


async def test_the_tenant_setting_never_outlives_its_transaction_on_a_pooled_connection(
    app_engine: AsyncEngine, make_customer
) -> None:
    t = f"rls-{uuid.uuid4().hex[:6]}"
    await make_customer(t)
    reads = Reads(app_engine)
    assert (
        len(await reads.list_customers(t, CustomerFilterSpec(), "CREATED_AT_DESC", 10, None)) == 1
    )
    # the same pooled connections, next request: the previous tenant is gone
    for _ in range(3):
        async with app_engine.connect() as c:
            setting = (
                await c.execute(text("SELECT current_setting('app.tenant_id', true)"))
            ).scalar()
            assert setting in (None, "")
            assert (await c.execute(text("SELECT count(*) FROM customers"))).scalar() == 0


async def two_tenants_times_200_requests_see_0_foreign_rows(reads: Reads, make_customer) -> None:
    # given two tenants' customers
    tenants = [f"rls-x-{uuid.uuid4().hex[:6]}", f"rls-y-{uuid.uuid4().hex[:6]}"]
    mine = {t: {await make_customer(t) for _ in range(5)} for t in tenants}

    async def request(t: str) -> tuple[str, set[uuid.UUID], set[str]]:
        rows = await reads.list_customers(t, CustomerFilterSpec(), "CREATED_AT_DESC", 50, None)
        return t, {r.id for r in rows}, {r.tenant_id for r in rows}

    # when 400 requests of both tenants share a few connections
    results = await asyncio.gather(*(request(tenants[i % 2]) for i in range(400)))
    # then each saw its own customers only
    foreign = sum(len(ids - mine[t]) + len(owners - {t}) for t, ids, owners in results)
    assert foreign == 0
    assert all(ids == mine[t] for t, ids, _ in results)


async def test_two_tenants_times_200_concurrent_requests_on_a_small_pool_see_0_foreign_rows(
    app_engine: AsyncEngine, make_customer
) -> None:
    await two_tenants_times_200_requests_see_0_foreign_rows(Reads(app_engine), make_customer)


async def test_a_tenant_read_that_does_not_name_its_tenant_is_refused_before_it_runs(
    app_engine: AsyncEngine,
) -> None:
    # the tenant is set by the read statement itself, which needs `:t` to order it first
    with pytest.raises(ValueError, match="names its tenant"):
        await Reads(app_engine)._all("SELECT count(*) FROM customers", {"t": "any"})


async def test_reads_on_their_own_pool_see_only_their_tenant_and_leave_no_setting_behind(
    app_engine: AsyncEngine, make_customer
) -> None:
    # reads on their own pool of 3 connections
    async with driver_pool(app_engine, 3) as pool:
        reads = Reads(app_engine, pool=pool)
        await two_tenants_times_200_requests_see_0_foreign_rows(reads, make_customer)
        # and no connection of the pool keeps a tenant for its next user
        held = [await pool.acquire() for _ in range(3)]
        try:
            for c in held:
                assert await c.fetchval("SELECT current_setting('app.tenant_id', true)") in (
                    None,
                    "",
                )
                assert await c.fetchval("SELECT count(*) FROM customers") == 0
        finally:
            for c in held:
                await pool.release(c)


async def test_stage_changes_on_the_driver_pool_touch_only_their_tenant(
    app_engine: AsyncEngine, make_customer
) -> None:
    # given two tenants' customers, and stage changes on a pool of 3 as the application role
    tenants = [f"rls-w-{uuid.uuid4().hex[:6]}", f"rls-v-{uuid.uuid4().hex[:6]}"]
    mine = {t: [await make_customer(t) for _ in range(4)] for t in tenants}
    async with driver_pool(app_engine, 3) as pool:
        uc = UseCases(app_engine, limiter=Unlimited())
        uc.pool = pool

        async def move(t: str, cid: uuid.UUID, stage: str) -> object:
            (outcome,) = (await uc.update_stages([command(t, cid, stage)])).outcomes
            return outcome

        # when 80 changes of both tenants interleave, and each tenant names the other's ids
        own = [
            move(t, mine[t][i % 4], ("Onboarded", "Active")[i // 4 % 2])
            for i in range(40)
            for t in tenants
        ]
        foreign = [move(tenants[0], cid, "Onboarded") for cid in mine[tenants[1]]]
        outcomes = await asyncio.gather(*own, *foreign)
        # then every change of its own lands, none of the other's is even found
        assert not [o for o in outcomes[: len(own)] if isinstance(o, DomainError)]
        assert {o.code.value for o in outcomes[len(own) :]} == {"NOT_FOUND"}  # type: ignore[union-attr]
        # and no connection of the pool keeps a tenant or a transaction for its next user
        held = [await pool.acquire() for _ in range(3)]
        try:
            for c in held:
                assert not c.is_in_transaction()
                assert await c.fetchval("SELECT current_setting('app.tenant_id', true)") in (
                    None,
                    "",
                )
        finally:
            for c in held:
                await pool.release(c)
    # and each tenant's history holds its creations and its own moves, nothing more
    for n, t in enumerate(tenants):
        moved = sum(1 for o in outcomes[n : len(own) : 2] if o.transition is not None)  # type: ignore[union-attr]
        async with app_engine.begin() as c:
            await tenant_scope(c, t)
            rows = (await c.execute(text("SELECT count(*) FROM lifecycle_history_all"))).scalar()
        assert rows == 4 + moved
