"""A change is queued whole and written once by its seal (migration 0017): readers see it in
its customer's history from its commit on, exactly once; only the seal writes links."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.data.audit import verify
from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys
from customer360.data.queries import Reads
from customer360.settings import Settings
from tests.helpers import change, seal
from tests.helpers import command as move
from tests.integration.test_audit_chain import CHAIN_LOCK, CHAIN_UNLOCK

FORGED = text(
    "INSERT INTO lifecycle_history (id, tenant_id, customer_id, version, to_stage, changed_at, "
    "changed_by, source, config_version, chain_pos, prev_hash, row_hash) VALUES "
    "(:id, :t, gen_random_uuid(), 1, 'Prospect', now(), 'mallory', 'API', 1, 1, "
    "decode(repeat('00', 32), 'hex'), decode(repeat('11', 32), 'hex'))"
)


@pytest.fixture
def tenant() -> str:
    return f"queue-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def no_seal(engine: AsyncEngine, tenant: str) -> AsyncIterator[None]:
    """The tenant's chain lock held by a session: no sealer (the suite's gateway runs one)
    links its changes meanwhile."""
    async with engine.connect() as holder:
        await holder.execute(CHAIN_LOCK, {"t": tenant})
        await holder.commit()
        try:
            yield
        finally:
            await holder.execute(CHAIN_UNLOCK, {"t": tenant})
            await holder.commit()


async def populations(reads: Reads, tenant: str) -> dict[str, int]:
    return {s: n for s, n in (await reads.stage_counts(tenant)).items() if n}


async def rows(engine: AsyncEngine, sql: str, **params: object) -> list:  # type: ignore[type-arg]
    async with engine.connect() as c:
        return list(await c.execute(text(sql), params))


async def test_a_change_is_in_its_history_from_its_commit_on_and_once_after_its_seal(
    engine: AsyncEngine, make_customer, tenant: str
) -> None:
    # given a customer, sealed
    cid = await make_customer(tenant)
    await seal(engine)
    reads = Reads(engine)
    async with no_seal(engine, tenant):
        # when a change commits and no seal has run yet
        moved = await change(engine, move(tenant, cid, "Onboarded"))
        assert moved.transition is not None
        # then its history already shows it, and nothing of it is in the chain or the outbox
        page = await reads.history_page(tenant, cid, 10, None)
        assert [(r.version, r.to_stage) for r in page] == [(2, "Onboarded"), (1, "Prospect")]
        assert await reads.history_count(tenant, cid) == 2
        assert await populations(reads, tenant) == {"Onboarded": 1}
        sealed = "SELECT id FROM lifecycle_history WHERE customer_id = :c"
        assert len(await rows(engine, sealed, c=cid)) == 1
        box = "SELECT id FROM outbox WHERE history_id = :h"
        assert await rows(engine, box, h=moved.transition.id) == []
    # when it is sealed
    assert await seal(engine) >= 1
    # then its history shows it once, linked, and its audit event carries its place
    page = await reads.history_page(tenant, cid, 10, None)
    assert [(r.version, r.to_stage) for r in page] == [(2, "Onboarded"), (1, "Prospect")]
    assert await populations(reads, tenant) == {"Onboarded": 1}
    (linked,) = await rows(
        engine,
        "SELECT h.seq, h.chain_pos, h.row_hash, o.history_seq, o.payload->'data'->'chain' AS c, "
        "o.webhooks_fanned_at FROM lifecycle_history h JOIN outbox o ON o.history_id = h.id "
        "WHERE h.id = :h",
        h=moved.transition.id,
    )
    assert linked.history_seq == linked.seq
    assert linked.c == {"position": linked.chain_pos, "hash": linked.row_hash.hex()}
    assert linked.webhooks_fanned_at is not None
    assert await rows(engine, "SELECT 1 FROM history_unsealed WHERE tenant_id = :t", t=tenant) == []
    assert (await verify(engine, tenant)).broken == []


async def test_the_audit_event_keeps_the_outbox_id_its_writer_drew(
    engine: AsyncEngine, make_customer, tenant: str
) -> None:
    # given a change committed with its audit event queued
    cid = await make_customer(tenant)
    async with no_seal(engine, tenant):
        moved = await change(engine, move(tenant, cid, "Onboarded"))
        assert moved.transition is not None
        (queued,) = await rows(
            engine,
            "SELECT outbox_id, key FROM history_unsealed WHERE history_id = :h",
            h=moved.transition.id,
        )
    # when it is sealed, then its outbox row has that id (the cache generation the writer
    # waits for) and that key
    await seal(engine)
    (box,) = await rows(
        engine, "SELECT id, key FROM outbox WHERE history_id = :h", h=moved.transition.id
    )
    assert (box.id, box.key) == (queued.outbox_id, str(cid))


async def test_only_the_seal_writes_links(engine: AsyncEngine, tenant: str) -> None:
    # when the tables' owner inserts a history row with links of its own, then it is refused
    async with engine.begin() as c:
        with pytest.raises(DBAPIError, match="only the seal links rows"):
            await c.execute(FORGED, {"id": uuid.uuid4(), "t": tenant})


async def test_the_application_role_cannot_even_name_the_chain_columns(
    app_database_url: str, settings: Settings, tenant: str
) -> None:
    # given the gateway's role, which is not the owner (and sets what the seal sets)
    app = make_engine(app_database_url, keys=TenantKeys(settings.keyring()))
    try:
        async with app.begin() as c:
            await c.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})
            await c.execute(text("SELECT set_config('c360.sealing', 'on', true)"))
            # when it inserts a history row with links, then PostgreSQL refuses the columns
            with pytest.raises(DBAPIError, match="permission denied"):
                await c.execute(FORGED, {"id": uuid.uuid4(), "t": tenant})
    finally:
        await app.dispose()


async def test_an_older_gateways_change_is_linked_at_commit_and_counted_by_the_seal(
    engine: AsyncEngine, make_customer, tenant: str
) -> None:
    # given a customer, sealed, and a change written as the gateway before 0017 wrote it:
    # the history row itself (deferring to the sealer), a queue row of the seq and stages
    cid = await make_customer(tenant)
    await seal(engine)
    history = uuid.uuid4()
    async with engine.begin() as c:
        await c.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})
        await c.execute(text("SELECT set_config('c360.seal', 'deferred', true)"))
        (seq,) = (
            await c.execute(
                text(
                    "INSERT INTO lifecycle_history (id, tenant_id, customer_id, version, "
                    "from_stage, to_stage, changed_at, changed_by, source, config_version) "
                    "VALUES (:h, :t, :c, 2, 'Prospect', 'Active', now(), 'u', 'API', 1) "
                    "RETURNING seq"
                ),
                {"h": history, "t": tenant, "c": cid},
            )
        ).one()
        await c.execute(
            text(
                "INSERT INTO history_unsealed (history_id, tenant_id, seq, from_stage, to_stage) "
                "VALUES (:h, :t, :s, 'Prospect', 'Active')"
            ),
            {"h": history, "t": tenant, "s": seq},
        )
        await c.execute(
            text("UPDATE customers SET stage = 'Active', version = 2 WHERE id = :c"), {"c": cid}
        )
    reads = Reads(engine)
    # then it was linked at its commit, read once in the history, and counted as a delta
    (row,) = await rows(engine, "SELECT chain_pos FROM lifecycle_history WHERE id = :h", h=history)
    assert row.chain_pos is not None
    assert [r.to_stage for r in await reads.history_page(tenant, cid, 10, None)] == [
        "Active",
        "Prospect",
    ]
    assert await populations(reads, tenant) == {"Active": 1}
    # and the next seal counts it and lets its queue row go, leaving the chain whole
    await seal(engine)
    assert await populations(reads, tenant) == {"Active": 1}
    assert await rows(engine, "SELECT 1 FROM history_unsealed WHERE tenant_id = :t", t=tenant) == []
    assert (await verify(engine, tenant)).broken == []
