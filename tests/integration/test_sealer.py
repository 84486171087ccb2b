"""The sealer (events/sealer.py) on real PostgreSQL: woken by the writers' commits, alone in
linking the chain, and the relays publish an audit event only once it is sealed."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.auth.ratelimit import Unlimited
from customer360.data.cloudevents import AUDIT_TOPIC
from customer360.data.crypto import Keyring
from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys
from customer360.events.relay import OutboxRelay, OutboxRow
from customer360.events.sealer import Sealer
from customer360.observability import REGISTRY
from customer360.usecases import UseCases
from tests.conftest import DATA_KEY, scratch_database
from tests.helpers import command, created_event, seal

POLL_SECONDS = 30.0  # far longer than any wait below: only a wake can explain a prompt seal


@pytest.fixture
async def own_engine(pg_server_url: str) -> AsyncIterator[AsyncEngine]:
    """A database of its own: the suite's gateway leads the sealer of the shared one."""
    async with scratch_database(pg_server_url, "c360_seal") as url:
        engine = make_engine(
            url, pool_size=5, max_overflow=0, keys=TenantKeys(Keyring.parse(DATA_KEY))
        )
        try:
            yield engine
        finally:
            await engine.dispose()


async def unsealed(engine: AsyncEngine) -> int:
    async with engine.connect() as c:
        return int(
            (
                await c.execute(
                    text("SELECT count(*) FROM lifecycle_history WHERE chain_pos IS NULL")
                )
            ).scalar_one()
        )


async def sealed_within(engine: AsyncEngine, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await unsealed(engine) == 0:
            return True
        await asyncio.sleep(0.02)
    return False


@contextlib.asynccontextmanager
async def leading(engine: AsyncEngine, sealer: Sealer) -> AsyncIterator[None]:
    relay = asyncio.create_task(OutboxRelay(engine, [sealer], poll_seconds=POLL_SECONDS).run())
    try:
        for _ in range(200):  # until it holds the lease and listens
            if sealer._wake is not None:
                break
            await asyncio.sleep(0.02)
        assert sealer._wake is not None, "the sealer never led"
        yield
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay


@pytest.mark.parametrize("writer", ["the leading process", "another process"])
async def test_a_commit_wakes_the_sealer_which_links_it_at_once(
    own_engine: AsyncEngine, writer: str
) -> None:
    # given a sealer leading on this database, polling only every 30 s, and a writer whose
    # commits wake it: in its own process directly, from another process by NOTIFY
    leader = Sealer(own_engine)
    poker = leader if writer == "the leading process" else Sealer(own_engine)
    usecases = UseCases(own_engine, limiter=Unlimited(), on_history=poker.poke)
    tenant = f"seal-{uuid.uuid4().hex[:8]}"
    counted = REGISTRY.get_sample_value("c360_outbox_rows_total", {"sink": "sealer"}) or 0.0
    async with leading(own_engine, leader):
        # when customers are created and moved
        for _ in range(3):
            ev = created_event(tenant)
            await usecases.apply_event(ev)
            cid = uuid.UUID(ev["data"]["customer_id"])
            await usecases.update_stages([command(tenant, cid, "Onboarded")])
            # then each change is sealed well before any poll would have found it
            assert await sealed_within(own_engine, 5.0)
    # and the relay's counters say how many rows its seals carried (6 at least: others'
    # gateways in this process may seal too)
    now = REGISTRY.get_sample_value("c360_outbox_rows_total", {"sink": "sealer"}) or 0.0
    assert now - counted >= 6
    await poker.close()
    async with own_engine.connect() as c:
        positions = (
            await c.execute(
                text("SELECT chain_pos FROM lifecycle_history WHERE tenant_id = :t ORDER BY seq"),
                {"t": tenant},
            )
        ).scalars()
        assert list(positions) == list(range(1, 7))


class _Recording:
    name, column = "redis", "redis_published_at"

    def __init__(self) -> None:
        self.rows: list[OutboxRow] = []

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        self.rows.extend(rows)

    async def reset(self) -> None:
        return None


async def test_an_audit_event_is_published_only_once_its_row_is_sealed(
    own_engine: AsyncEngine,
) -> None:
    # given a change committed with no sealer running
    usecases = UseCases(own_engine, limiter=Unlimited())
    tenant = f"seal-{uuid.uuid4().hex[:8]}"
    await usecases.apply_event(created_event(tenant))
    sink = _Recording()
    relay = OutboxRelay(own_engine, [sink])
    async with own_engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("SELECT set_config('app.scope', 'system', false)"))
        # when the relay drains, then the audit event waits (no seq, no chain head yet)
        await relay.drain_once(conn, sink)
        assert [r for r in sink.rows if r.topic == AUDIT_TOPIC] == []
        # and once sealed, it goes out with its replay position and chain head
        assert await seal(own_engine) == 1
        await relay.drain_once(conn, sink)
        (event,) = [r for r in sink.rows if r.topic == AUDIT_TOPIC]
        assert event.history_seq is not None
        assert event.payload["data"]["chain"]["position"] == 1
        await conn.invalidate()
