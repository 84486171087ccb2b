"""The sealer (events/sealer.py) on real PostgreSQL: woken by the writers' commits, alone in
linking the chain, and the relays publish an audit event only once it is sealed."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

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
from customer360.events.signing import TargetPolicy
from customer360.events.webhooks import WebhookSink
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
        return int((await c.execute(text("SELECT count(*) FROM history_unsealed"))).scalar_one())


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


async def fanned_out(engine: AsyncEngine, tenant: str) -> tuple[list[bool], list[Any]]:
    """Each audit event's "fanned out" mark, and the deliveries made: (stage, chain position,
    endpoint url) each."""
    async with engine.connect() as c:
        await c.execute(text("SELECT set_config('app.scope', 'system', true)"))
        marks = await c.execute(
            text(
                "SELECT webhooks_fanned_at IS NOT NULL FROM outbox "
                "WHERE tenant_id = :t AND topic = :a ORDER BY id"
            ),
            {"t": tenant, "a": AUDIT_TOPIC},
        )
        deliveries = await c.execute(
            text(
                "SELECT d.payload->'data'->>'to_stage', d.payload->'data'->'chain'->>'position', "
                "e.url FROM webhook_deliveries d JOIN webhook_endpoints e "
                "ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id "
                "WHERE d.tenant_id = :t ORDER BY d.outbox_id"
            ),
            {"t": tenant},
        )
        return [m for (m,) in marks], [tuple(d) for d in deliveries]


async def test_the_seal_fans_audit_events_out_to_the_endpoints_that_match(
    own_engine: AsyncEngine,
) -> None:
    # given a tenant with an endpoint for At-Risk, one for everything that is paused, and
    # another tenant with no endpoint at all
    usecases = UseCases(own_engine, limiter=Unlimited(), webhook_policy=TargetPolicy(True))
    hooked, plain = f"hook-{uuid.uuid4().hex[:8]}", f"plain-{uuid.uuid4().hex[:8]}"
    customers = {}
    for tenant in (hooked, plain):
        created = created_event(tenant)
        await usecases.apply_event(created)
        customers[tenant] = uuid.UUID(created["data"]["customer_id"])
    risky = {"url": "http://127.0.0.1:9/risk", "stages": ["At-Risk"], "active": True}
    await usecases.create_webhook(hooked, "admin", risky)
    await usecases.create_webhook(
        hooked, "admin", {"url": "http://127.0.0.1:9/all", "active": False}
    )
    await seal(own_engine)
    # when changes are written, then sealed with no relay running
    for stage in ("Active", "At-Risk"):
        for tenant in (hooked, plain):
            move = command(tenant, customers[tenant], stage, reason_code="Low Engagement")
            (done,) = (await usecases.update_stages([move])).outcomes
            assert not isinstance(done, Exception)
    assert await seal(own_engine) == 4
    # then every sealed event is marked fanned out by its seal, and only the At-Risk change
    # became a delivery, to the active endpoint, with its sealed payload
    marks, deliveries = await fanned_out(own_engine, hooked)
    assert marks == [True] * 3  # the creation's and the two changes'
    assert deliveries == [("At-Risk", "3", "http://127.0.0.1:9/risk")]
    marks, deliveries = await fanned_out(own_engine, plain)
    assert marks == [True] * 3 and deliveries == []


async def test_an_event_linked_at_commit_is_still_fanned_out_by_the_sink(
    own_engine: AsyncEngine,
) -> None:
    # given an endpoint, and a change linked at its commit as the seed and older gateways
    # link theirs (no seal: the sink is what fans it out)
    usecases = UseCases(own_engine, limiter=Unlimited(), webhook_policy=TargetPolicy(True))
    tenant = f"hook-{uuid.uuid4().hex[:8]}"
    await usecases.create_webhook(tenant, "admin", {"url": "http://127.0.0.1:9/x", "active": True})
    async with own_engine.begin() as c:
        await c.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})
        history = uuid.uuid4()
        await c.execute(
            text(
                "INSERT INTO lifecycle_history (id, tenant_id, customer_id, version, to_stage, "
                "changed_at, changed_by, source, config_version) "
                "VALUES (:h, :t, gen_random_uuid(), 1, 'Prospect', now(), 'seed', 'api', 1)"
            ),
            {"h": history, "t": tenant},
        )
        await c.execute(
            text(
                "INSERT INTO outbox (tenant_id, topic, key, payload, history_id) VALUES "
                '(:t, :a, \'k\', \'{"id": "e-1", "data": {"to_stage": "Prospect"}}\', :h)'
            ),
            {"t": tenant, "a": AUDIT_TOPIC, "h": history},
        )
    assert await unsealed(own_engine) == 0  # linked at commit
    assert await fanned_out(own_engine, tenant) == ([False], [])
    # when the webhook sink drains, then it makes the delivery and marks the row
    async with own_engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("SELECT set_config('app.scope', 'system', false)"))
        assert await OutboxRelay(own_engine, [WebhookSink()]).drain_once(conn, WebhookSink()) >= 1
        await conn.invalidate()
    marks, deliveries = await fanned_out(own_engine, tenant)
    assert marks == [True] and [d[0] for d in deliveries] == ["Prospect"]


async def test_the_pending_gauge_counts_audit_events_still_queued_for_their_seal(
    own_engine: AsyncEngine,
) -> None:
    # given a creation committed in a database that no sealer serves
    tenant = f"gauge-{uuid.uuid4().hex[:8]}"
    await UseCases(own_engine, limiter=Unlimited()).apply_event(created_event(tenant))
    relay = OutboxRelay(own_engine, [WebhookSink()])

    async def gauge() -> float | None:
        async with own_engine.connect() as conn:
            await relay._gauge(conn)
        return REGISTRY.get_sample_value("c360_outbox_pending")

    # then its audit event is pending while it waits for its seal (its outbox row is the
    # seal's, migration 0017), and no longer once sealed (the seal fans it out)
    assert await gauge() == 1
    assert await seal(own_engine) == 1
    assert await gauge() == 0
