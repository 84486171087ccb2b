"""The list keys beside the customers (migration 0016): a stage change updates the customer
row HOT, the keys follow every write, and the lists they serve are the lists of `customers`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys
from customer360.data.queries import ORDERINGS, CustomerFilterSpec, Reads
from customer360.data.scope import system_scope, tenant_scope
from customer360.settings import Settings
from tests.helpers import change, command

KEYS = "tenant_id, id, stage, stage_entered_at, updated_at, created_at, deleted_at"


@pytest.fixture
async def app_engine(app_database_url: str, settings: Settings) -> AsyncIterator[AsyncEngine]:
    e = make_engine(app_database_url, keys=TenantKeys(settings.keyring()))
    yield e
    await e.dispose()


async def keys_and_customers(engine: AsyncEngine, tenant: str) -> tuple[set[Any], set[Any]]:
    async with engine.begin() as c:
        await tenant_scope(c, tenant)
        # The tests' owner is a superuser, whom row-level security does not bind.
        mine = {"t": tenant}
        keys = f"SELECT {KEYS} FROM customer_list_keys WHERE tenant_id = :t"
        rows = f"SELECT {KEYS} FROM customers WHERE tenant_id = :t"
        found = set((await c.execute(text(keys), mine)).all())
        expected = set((await c.execute(text(rows), mine)).all())
    return found, expected


async def test_the_keys_follow_every_write_of_the_customers(
    engine: AsyncEngine, make_customer: Any, tenant: str
) -> None:
    # given five customers, created through the API's event path
    ids = [await make_customer() for _ in range(5)]
    # when stages change through the write path, one customer is soft-deleted and another
    # deleted outright by the owner
    await change(engine, command(tenant, ids[0], "Onboarded"))
    await change(engine, command(tenant, ids[1], "Onboarded"))
    await change(engine, command(tenant, ids[1], "Active"))
    async with engine.begin() as c:
        await tenant_scope(c, tenant)
        await c.execute(
            text("UPDATE customers SET deleted_at = now() WHERE tenant_id = :t AND id = :id"),
            {"t": tenant, "id": ids[2]},
        )
        await c.execute(
            text("DELETE FROM customers WHERE tenant_id = :t AND id = :id"),
            {"t": tenant, "id": ids[3]},
        )
    # then the keys hold exactly the customers' values, row for row
    keys, rows = await keys_and_customers(engine, tenant)
    assert keys == rows and len(rows) == 4
    assert {r.stage for r in rows if r.id == ids[1]} == {"Active"}


async def test_a_stage_change_updates_the_customer_row_hot(
    engine: AsyncEngine, make_customer: Any, tenant: str
) -> None:
    # given a customer just created (its page keeps room: fillfactor 90)
    cid = await make_customer()
    hot_updates = text("SELECT pg_stat_get_xact_tuples_hot_updated('customers'::regclass)")
    async with engine.begin() as c:
        await tenant_scope(c, tenant)
        before = await c.scalar(hot_updates)
        # when the write statement's update of the lifecycle columns runs
        await c.execute(
            text(
                "UPDATE customers SET stage = 'Onboarded', stage_entered_at = now(), "
                "lifecycle_updated_at = now(), lifecycle_updated_by = 'u', version = version + 1,"
                " updated_at = now() WHERE tenant_id = :t AND id = :id"
            ),
            {"t": tenant, "id": cid},
        )
        # then PostgreSQL made it a heap-only update: no index of the table took an entry
        assert await c.scalar(hot_updates) == before + 1
        # and the keys moved with it
        stage = await c.scalar(
            text("SELECT stage FROM customer_list_keys WHERE tenant_id = :t AND id = :id"),
            {"t": tenant, "id": cid},
        )
        assert stage == "Onboarded"


async def test_no_index_of_the_customers_covers_a_column_a_stage_change_writes(
    engine: AsyncEngine,
) -> None:
    # What the write statement sets on a customer (data/lifecycle.py, RECORD_SQL).
    written = {
        "stage",
        "stage_entered_at",
        "updated_at",
        "lifecycle_updated_at",
        "lifecycle_updated_by",
        "reason_code",
        "source",
        "version",
    }
    async with engine.connect() as c:
        indexed = (
            await c.execute(
                text(
                    "SELECT DISTINCT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indrelid = 'customers'::regclass"
                )
            )
        ).scalars()
        predicates = (
            await c.execute(
                text(
                    "SELECT coalesce(string_agg(pg_get_expr(indpred, indrelid), ' '), '') "
                    "FROM pg_index WHERE indrelid = 'customers'::regclass"
                )
            )
        ).scalar_one()
    assert written.isdisjoint(indexed)
    assert not [w for w in written if w in predicates]


async def test_lists_by_the_keys_are_the_lists_of_the_customers(
    engine: AsyncEngine, app_engine: AsyncEngine, make_customer: Any, tenant: str
) -> None:
    # given a dozen customers in three stages, one of them soft-deleted
    ids = [await make_customer() for _ in range(12)]
    for n, cid in enumerate(ids):
        for stage in ("Onboarded", "Active")[: n % 3]:
            await change(engine, command(tenant, cid, stage))
    async with engine.begin() as c:
        await tenant_scope(c, tenant)
        await c.execute(
            text("UPDATE customers SET deleted_at = now() WHERE tenant_id = :t AND id = :id"),
            {"t": tenant, "id": ids[4]},
        )
    reads = Reads(app_engine)
    cases: list[tuple[str, tuple[str, ...] | None]] = [
        ("UPDATED_AT_DESC", None),
        ("STAGE_ENTERED_AT_DESC", None),
        ("CREATED_AT_DESC", ("Active",)),
        ("STAGE_ENTERED_AT_DESC", ("Onboarded",)),
        ("CREATED_AT_DESC", ("Active", "Onboarded")),
    ]
    for order, stages in cases:
        spec = CustomerFilterSpec(stages=stages)
        # when the application reads them in pages of 5 through the keys
        assert spec.reads_keys(order) == (ORDERINGS[order].keyed or stages == ("Active",))
        seen: list[uuid.UUID] = []
        after: tuple[Any, ...] | None = None
        while True:
            page = await reads.list_customers(tenant, spec, order, 5, after)
            seen += [r.id for r in page]
            if len(page) < 5:
                break
            last = page[-1]
            after = tuple(getattr(last, col) for col in ORDERINGS[order].columns)
        # then they are the customers' own list: same rows, same order, no deleted one
        ordering = ORDERINGS[order]
        where = "tenant_id = :t AND deleted_at IS NULL"
        where += " AND stage = ANY(:stages)" if stages else ""
        async with engine.begin() as c:
            await tenant_scope(c, tenant)
            expected = (
                await c.execute(
                    text(f"SELECT id FROM customers WHERE {where} ORDER BY {ordering.order_by()}"),
                    {"t": tenant, "stages": list(stages or ())},
                )
            ).scalars()
            assert seen == list(expected), (order, stages)
        assert await reads.count_customers(tenant, spec) == len(seen)
        assert ids[4] not in seen


async def test_the_application_reads_the_keys_but_cannot_write_them(
    engine: AsyncEngine, app_engine: AsyncEngine, make_customer: Any, tenant: str
) -> None:
    cid = await make_customer()
    async with app_engine.begin() as c:
        await tenant_scope(c, tenant)
        assert await c.scalar(text("SELECT count(*) FROM customer_list_keys")) == 1
    with pytest.raises(DBAPIError, match="permission denied"):
        async with app_engine.begin() as c:
            await tenant_scope(c, tenant)
            await c.execute(
                text("UPDATE customer_list_keys SET stage = 'Churned' WHERE id = :id"),
                {"id": cid},
            )
    async with engine.begin() as c:
        await system_scope(c)
        assert (
            await c.scalar(text("SELECT stage FROM customer_list_keys WHERE id = :id"), {"id": cid})
            != "Churned"
        )
