"""Faults one after another, as production sees them (issue 13): every committed change
still reaches the audit topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.devstack import embedded_kafka, embedded_redis, free_port
from customer360.events.sealer import Sealer
from customer360.lifecycle import ChangeStage, Source
from customer360.observability import REGISTRY
from customer360.settings import Settings
from tests.conftest import Api
from tests.helpers import apply_event, created_event, read_topic, use_cases
from tests.live.test_live import SUB, wait_for
from tests.live.test_resilience import isolated, kafka_failures, pending
from tests.live.wsclient import connect

OUTAGE_SECONDS = float(os.environ.get("C360_TEST_OUTAGE_SECONDS", "3"))


async def _published(engine: AsyncEngine) -> bool:
    return await pending(engine, "published_at") == 0


async def _relayed(engine: AsyncEngine) -> bool:
    return await pending(engine, "redis_published_at") == 0


async def _failed_since(before: float) -> bool:
    return kafka_failures() > before


async def test_redis_restart_then_broker_outage_loses_no_audit_event(
    pg_server_url: str, settings: Settings, tmp_path: Path
) -> None:
    redis_port, kafka_port = free_port(), free_port()
    redis = embedded_redis(tmp_path, redis_port)
    redis_url = redis.__enter__()
    kafka = embedded_kafka(kafka_port)
    bootstrap = kafka.__enter__()
    try:
        async with (
            isolated(pg_server_url, settings, redis_url=redis_url, kafka_bootstrap=bootstrap) as (
                url,
                engine,
            ),
            httpx.AsyncClient(base_url=url) as http,
        ):
            api = Api(http, f"t-{uuid.uuid4().hex[:8]}")
            customers = []
            for _ in range(4):
                ev = created_event(api.tenant)
                await apply_event(engine, ev)
                customers.append(uuid.UUID(ev["data"]["customer_id"]))
            await wait_for(lambda: _published(engine), 60)
            # given Redis restarted under a live subscription (it resumes)
            async with connect(url, {"Authorization": f"Bearer {api.token}"}) as ws:
                await ws.subscribe(SUB, {"cid": str(customers[0])})
                await asyncio.sleep(0.3)
                redis.__exit__(None, None, None)
                redis = embedded_redis(tmp_path, redis_port)
                redis.__enter__()
                await asyncio.sleep(1.0)
                resp = await api.patch(customers[0], {"stage": "Onboarded"})
                assert resp.status_code == 200, resp.text
                (seen,) = await ws.events(1, timeout=20)
                assert seen["transition"]["toStage"] == "Onboarded"
            await wait_for(lambda: _published(engine), 60)
            # when the broker goes down, 20 changes commit, and it comes back empty
            failed = kafka_failures()
            kafka.__exit__(None, None, None)
            usecases = use_cases(engine)
            moved: list[str] = []
            for i in range(20):
                cid = customers[i % 4]
                stage = ["Active", "Onboarded"][(i // 4) % 2]
                cmd = ChangeStage(api.tenant, cid, stage, "crm", Source.EVENT_LISTENER, "x")
                (outcome,) = (await usecases.update_stages([cmd])).outcomes
                assert outcome.transition is not None  # type: ignore[union-attr]
                moved.append(str(outcome.transition.id))  # type: ignore[union-attr]
            assert await pending(engine, "published_at") == 20
            # (back only once the relay has seen a publish fail: a producer from before the
            # outage, sending to the new broker, would have its batches acknowledged into
            # partitions that no longer exist)
            await wait_for(lambda: _failed_since(failed), 60)
            await asyncio.sleep(OUTAGE_SECONDS)
            kafka = embedded_kafka(kafka_port)
            kafka.__enter__()
            # then the gateway makes the topics again, every change is published, and the
            # live side kept up too
            await wait_for(lambda: _published(engine), 120)
            await wait_for(lambda: _relayed(engine), 30)
            records = await read_topic(
                bootstrap, "audit.lifecycle.updated", lambda rs: len(rs) >= 20, timeout=30
            )
    finally:
        kafka.__exit__(None, None, None)
        redis.__exit__(None, None, None)
    published = {json.loads(r.value)["data"]["transition_id"] for r in records}
    assert set(moved) <= published


class _Wedged:
    """A sink whose first publish hangs and shrugs off its first cancellation, as a client
    wedged in a shielded wait does; the outbox and PostgreSQL around it are real."""

    name, column = "wedged", "redis_published_at"

    def __init__(self) -> None:
        self.calls, self.resets, self.published = 0, 0, []

    async def publish(self, rows) -> None:  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)
            await asyncio.sleep(7)  # past the relay's grace: it must not wait for this
            return
        self.published.extend(r.id for r in rows)

    async def reset(self) -> None:
        self.resets += 1


async def test_a_drain_that_neither_fails_nor_finishes_is_seen_and_recovered(
    pg_server_url: str, settings: Settings
) -> None:
    from customer360.data.db import make_engine
    from customer360.data.keys import TenantKeys
    from customer360.events.relay import OutboxRelay
    from tests.conftest import scratch_database

    def stalls() -> float:
        return REGISTRY.get_sample_value("c360_outbox_stalls_total", {"sink": "wedged"}) or 0.0

    async with scratch_database(pg_server_url, "c360_stall") as url:
        engine = make_engine(url, keys=TenantKeys(settings.keyring()))
        sink = _Wedged()
        before = stalls()
        # (the sealer beside it, as in the gateway: audit events go out once sealed)
        sinks = [sink, Sealer(engine)]
        relay = asyncio.create_task(OutboxRelay(engine, sinks, drain_timeout=1.0).run())
        try:
            # given a committed change whose first publish wedges
            await apply_event(engine, created_event(f"t-{uuid.uuid4().hex[:8]}"))

            async def out() -> bool:
                return bool(sink.published)

            # then the stall is counted, the sink reset, and the row published all the same
            await wait_for(out, 30)
        finally:
            relay.cancel()
            with contextlib.suppress(BaseException):
                await relay
            await engine.dispose()
    assert stalls() == before + 1
    assert sink.resets == 1 and sink.calls >= 2 and len(sink.published) == 1


class _Interrupted:
    """A sink whose first publish awaits a future its client library then cancels (as
    aiokafka does to in-flight batches when it reconnects to a broker that came back)."""

    name, column = "interrupted", "redis_published_at"

    def __init__(self) -> None:
        self.calls, self.published = 0, []

    async def publish(self, rows) -> None:  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            batch: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.2, batch.cancel)
            await batch
        self.published.extend(r.id for r in rows)

    async def reset(self) -> None:
        return None


async def test_a_cancellation_from_inside_a_sink_does_not_stop_the_relay(
    pg_server_url: str, settings: Settings
) -> None:
    from customer360.data.db import make_engine
    from customer360.data.keys import TenantKeys
    from customer360.events.relay import OutboxRelay
    from tests.conftest import scratch_database

    async with scratch_database(pg_server_url, "c360_intr") as url:
        engine = make_engine(url, keys=TenantKeys(settings.keyring()))
        sink = _Interrupted()
        relay = asyncio.create_task(OutboxRelay(engine, [sink, Sealer(engine)]).run())
        try:
            # given a committed change whose first publish is cancelled under the relay
            await apply_event(engine, created_event(f"t-{uuid.uuid4().hex[:8]}"))

            async def out() -> bool:
                return bool(sink.published)

            # then the relay retries it instead of ending without a word
            await wait_for(out, 20)
            assert not relay.done()
        finally:
            relay.cancel()
            with contextlib.suppress(BaseException):
                await relay
            await engine.dispose()
    assert sink.calls >= 2 and len(sink.published) == 1


class _Recording:
    name, column = "redis", "redis_published_at"

    def __init__(self) -> None:
        self.seqs: list[int | None] = []

    async def publish(self, rows) -> None:  # type: ignore[no-untyped-def]
        self.seqs.extend(r.history_seq for r in rows)

    async def reset(self) -> None:
        return None


async def test_live_subscribers_get_changes_in_position_order_whatever_the_outbox_order(
    pg_server_url: str,
) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from customer360.events.relay import OutboxRelay
    from tests.conftest import scratch_database

    # a database of its own: no other relay drains it
    async with scratch_database(pg_server_url, "c360_order") as url:
        engine = create_async_engine(url)
        try:
            # given two changes whose outbox rows are in the opposite order of their positions
            # (the first insert committed last), and a cache-only row
            async with engine.begin() as c:
                for seq in (902, 901, None):
                    await c.execute(
                        text(
                            "INSERT INTO outbox (tenant_id, topic, key, payload, history_seq) "
                            "VALUES ('t', :topic, 'k', '{}', :seq)"
                        ),
                        {"seq": seq, "topic": "audit.lifecycle.updated" if seq else "x"},
                    )
            # when the Redis sink's relay drains them
            sink = _Recording()
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                assert await OutboxRelay(engine, [sink]).drain_once(conn, sink) == 3
        finally:
            await engine.dispose()
    # then subscribers get them by position (the cache-only row first: it only invalidates)
    assert sink.seqs == [None, 901, 902]
