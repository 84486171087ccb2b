"""Hot reads keep a cached plan: PostgreSQL plans a page's statement once, not per page."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.data.crypto import Keyring
from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys
from customer360.data.models import customers
from customer360.data.queries import ORDERINGS, CustomerFilterSpec, Reads
from tests.conftest import DATA_KEY

# The pages' statements on this connection (not this one's own).
PLANS = text(
    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
    "WHERE statement LIKE '%c360_scope%ORDER BY%' "
    "AND statement NOT LIKE '%pg_prepared_statements%'"
)


async def test_a_page_of_customers_is_served_by_its_cached_generic_plan(
    database_url: str, engine: AsyncEngine, make_customer
) -> None:
    # given a tenant of 20,000 customers (copies of one: a planner that costs a page by an
    # unknown limit prices it far above a page of 2), and reads on one connection
    tenant = f"plans-{uuid.uuid4().hex[:8]}"
    template = await make_customer(tenant)
    columns = ", ".join(c.name for c in customers.columns if c.name != "id")
    async with engine.begin() as c:
        await c.execute(
            text(
                f"INSERT INTO customers (id, {columns}) SELECT gen_random_uuid(), {columns} "
                "FROM customers, generate_series(1, 20000) WHERE id = :id"
            ),
            {"id": template},
        )
        await c.execute(text("ANALYZE customers"))
    one = make_engine(
        database_url, pool_size=1, max_overflow=0, keys=TenantKeys(Keyring.parse(DATA_KEY))
    )
    try:
        reads = Reads(one)
        # when the same page is asked for ten times in each order
        for order in ORDERINGS:
            for _ in range(10):
                page = await reads.list_customers(
                    tenant, CustomerFilterSpec(), order, 2, None, frozenset({"tier"})
                )
                assert len(page) == 2
        async with one.connect() as c:
            plans = (await c.execute(PLANS)).all()
    finally:
        await one.dispose()
    # then, for each, PostgreSQL planned it five times, then reused one plan (a LIMIT bound as
    # a parameter kept it planning every execution anew)
    assert len(plans) == len(ORDERINGS), plans
    assert all(p.custom_plans == 5 and p.generic_plans == 5 for p in plans), plans
