"""Nothing is missed: not when Kafka is down, not when Redis restarts, not on redelivery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.app import create_app
from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys
from customer360.devstack import embedded_kafka, embedded_redis, free_port
from customer360.events.consumer import EventConsumer
from customer360.events.hub import QUEUE_SIZE, Subscriber
from customer360.events.ownership import Ownership
from customer360.lifecycle import ChangeStage, Source
from customer360.observability import REGISTRY
from customer360.settings import Settings
from tests.conftest import Api, run_server, scratch_database
from tests.helpers import (
    apply_event,
    change,
    created_event,
    read_topic,
    renewed_event,
    unpublished,
    use_cases,
)
from tests.live.test_live import SUB, wait_for
from tests.live.wsclient import connect


@contextlib.asynccontextmanager
async def isolated(
    pg_server_url: str, settings: Settings, **overrides: Any
) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A gateway on a database of its own: outbox relays lead per database."""
    async with scratch_database(pg_server_url, "c360_iso") as url:
        engine = make_engine(url, keys=TenantKeys(settings.keyring()))
        try:
            app = create_app(settings.model_copy(update={"database_url": url, **overrides}))
            async with run_server(app) as base:
                yield base, engine
        finally:
            await engine.dispose()


async def version_and_renewals(engine: AsyncEngine, cid: uuid.UUID) -> tuple[int, int]:
    """A renewed customer's lifecycle version and renewal count: (2, 1) after one renewal."""
    async with engine.connect() as c:
        row = (
            await c.execute(
                text(
                    "SELECT c.version, m.contract_renewal_count FROM customers c "
                    "JOIN customer_metrics m ON m.customer_id = c.id WHERE c.id = :c"
                ),
                {"c": cid},
            )
        ).one()
    return int(row.version), int(row.contract_renewal_count)


async def pending(engine: AsyncEngine, column: str) -> int:
    return await unpublished(engine, column)


async def test_changes_commit_while_kafka_is_down_and_are_published_when_it_returns(
    pg_server_url: str, settings: Settings
) -> None:
    port = free_port()  # nobody listens here yet: Kafka is down
    failed = kafka_failures()
    async with (
        isolated(pg_server_url, settings, kafka_bootstrap=f"127.0.0.1:{port}") as (url, engine),
        httpx.AsyncClient(base_url=url) as http,
    ):
        api = Api(http, f"t-{uuid.uuid4().hex[:8]}")
        customers = []
        for _ in range(3):
            ev = created_event(api.tenant)
            await apply_event(engine, ev)
            customers.append(ev["data"]["customer_id"])
        for cid in customers:
            for stage in ("Onboarded", "Active"):
                assert (await api.patch(cid, {"stage": stage})).status_code == 200
        ready = await http.get("/readyz")
        # Kafka alone down: degraded, still in rotation (CONTRACT section 1)
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["kafka"].startswith("error")
        assert await pending(engine, "published_at") == 9
        # a producer still making its first connection is not a failed publish (an alert
        # on c360_outbox_failures_total would fire at every start while Kafka is away)
        assert kafka_failures() == failed
        # when Kafka comes back, everything committed is published, in order per customer
        with embedded_kafka(port) as bootstrap:
            await wait_for(lambda: _none_pending(engine), 60)
            records = await read_topic(
                bootstrap, "audit.lifecycle.updated", lambda rs: len(rs) >= 9
            )
    seen: dict[str, list[int]] = {}
    for r in records:
        doc = json.loads(r.value)
        seen.setdefault(doc["data"]["customer_id"], []).append(doc["data"]["version"])
    assert seen == {cid: [1, 2, 3] for cid in customers}


def kafka_failures() -> float:
    """Failed drains of the Kafka sink so far (c360_outbox_failures_total)."""
    return REGISTRY.get_sample_value("c360_outbox_failures_total", {"sink": "kafka"}) or 0.0


async def _none_pending(engine: AsyncEngine) -> bool:
    return await pending(engine, "published_at") == 0


async def test_a_subscriber_misses_nothing_when_redis_restarts(
    pg_server_url: str, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    redis = embedded_redis(tmp_path, port)
    redis_url = redis.__enter__()
    try:
        async with (
            isolated(pg_server_url, settings, redis_url=redis_url, kafka_bootstrap="off") as (
                url,
                engine,
            ),
            httpx.AsyncClient(base_url=url) as http,
        ):
            api = Api(http, f"t-{uuid.uuid4().hex[:8]}")
            ev = created_event(api.tenant)
            await apply_event(engine, ev)
            cid = ev["data"]["customer_id"]
            await wait_for(lambda: _redis_done(engine), 10)
            async with connect(url, {"Authorization": f"Bearer {api.token}"}) as ws:
                await ws.subscribe(SUB, {"cid": cid})
                await asyncio.sleep(0.3)
                await api.patch(cid, {"stage": "Onboarded"})
                (first,) = await ws.events(1)
                # Redis goes away: user updates are refused (the rate limit fails closed),
                # changes from events keep committing through the one write path
                redis.__exit__(None, None, None)
                refused = await api.patch(cid, {"stage": "Active"})
                assert refused.status_code == 429 and refused.headers["Retry-After"]
                assert refused.json()["error"]["code"] == "RATE_LIMITED"
                for stage in ("Active", "Onboarded"):
                    await change(
                        engine,
                        ChangeStage(
                            api.tenant, uuid.UUID(cid), stage, "crm", Source.EVENT_LISTENER
                        ),
                    )
                # and comes back on the same address
                redis = embedded_redis(tmp_path, port)
                redis.__enter__()
                await api.patch(cid, {"stage": "Active"})
                rest = await ws.events(3, timeout=20)
                with pytest.raises(TimeoutError):
                    await ws.receive(timeout=1.0)  # and nothing twice
    finally:
        redis.__exit__(None, None, None)
    assert first["transition"]["toStage"] == "Onboarded"
    assert [e["transition"]["toStage"] for e in rest] == ["Active", "Onboarded", "Active"]


async def _redis_done(engine: AsyncEngine) -> bool:
    return await pending(engine, "redis_published_at") == 0


async def test_a_redelivered_event_changes_nothing_twice(
    engine: AsyncEngine, tenant: str, kafka_bootstrap: str, make_customer
) -> None:
    # the consumer crashed after the transaction committed and before the offset commit:
    # Kafka delivers the same record again
    cid = await make_customer()
    ev = renewed_event(tenant, cid, renewed_at="2025-07-28T12:00:00Z")
    record = ConsumerRecord(
        "contract.renewed", 0, 42, 0, 0, None, json.dumps(ev).encode(), None, 0, 0, ()
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        consumer = EventConsumer(kafka_bootstrap, use_cases(engine), producer)
        assert await consumer.apply(record) == "applied"
        assert await consumer.apply(record) == "duplicate"
    finally:
        await producer.stop()
    assert await version_and_renewals(engine, cid) == (2, 1)


def test_a_slow_subscriber_is_marked_and_memory_stays_bounded() -> None:
    sub = Subscriber("t")
    for n in range(QUEUE_SIZE * 3):
        sub.offer({"seq": n})
    assert sub.slow
    # bounded: what fitted, in order, and the mark (tests/unit/test_hub.py: why in order)
    assert sub.queue.qsize() == QUEUE_SIZE + 1
    messages = [sub.queue.get_nowait() for _ in range(QUEUE_SIZE + 1)]
    assert messages == [{"seq": n} for n in range(QUEUE_SIZE)] + [{"slow": True}]


async def test_the_sweep_forgets_only_what_every_configured_sink_published(
    engine: AsyncEngine, tenant: str
) -> None:
    import redis.asyncio as aioredis

    from customer360.events.relay import KafkaSink, OutboxRelay, RedisSink

    unused = aioredis.Redis()  # the sweep publishes nothing: no connection is made
    async with engine.begin() as c:
        await c.execute(
            text(
                "INSERT INTO outbox (tenant_id, topic, key, payload, created_at, published_at, "
                "redis_published_at) VALUES "
                "(:t, 'x', 'old-both', '{}', now() - interval '8 days', now(), now()), "
                "(:t, 'x', 'old-redis-only', '{}', now() - interval '8 days', NULL, now()), "
                "(:t, 'x', 'new-both', '{}', now(), now(), now())"
            ),
            {"t": tenant},
        )

    async def keys() -> set[str]:
        async with engine.connect() as c:
            return {
                r[0]
                for r in await c.execute(
                    text("SELECT key FROM outbox WHERE tenant_id=:t"), {"t": tenant}
                )
            }

    with_kafka = OutboxRelay(engine, [KafkaSink(None), RedisSink(unused)])  # type: ignore[arg-type]
    async with engine.connect() as c:
        await with_kafka.sweep(c)
    assert await keys() == {"old-redis-only", "new-both"}
    kafka_off = OutboxRelay(engine, [RedisSink(unused)])
    async with engine.connect() as c:
        await kafka_off.sweep(c)
    assert await keys() == {"new-both"}


async def test_an_out_of_range_time_is_rejected_not_retried(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    from customer360.usecases import EventRejected

    cid = await make_customer()
    ev = renewed_event(tenant, cid, renewed_at="9999-12-31T23:59:59-01:00")
    with pytest.raises(EventRejected, match="out of range"):
        await apply_event(engine, ev)


class _Seeks:
    """Records where the retry logic rewinds. Only `seek` is stood in for: the events, the
    database and the dead-letter topic in this test are real."""

    def __init__(self) -> None:
        self.seeks: list[int] = []

    def seek(self, tp: object, offset: int) -> None:
        self.seeks.append(offset)


async def consume_repeatedly(
    kafka_bootstrap: str, usecases: object, record: ConsumerRecord[bytes, bytes], times: int
) -> tuple[list[int | None], list[int]]:
    """One record handed to a real consumer's partition step `times` over (as after each
    rewind): what each step returned (the next offset once done), and where it rewound."""
    from aiokafka import TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        consumer = EventConsumer(kafka_bootstrap, usecases, producer)  # type: ignore[arg-type]
        consumer.retry_base = 0.001
        fake = _Seeks()
        own = Ownership(fake)  # type: ignore[arg-type]
        tp = TopicPartition(record.topic, record.partition)
        outcomes = [await consumer._partition(own, own.epoch, tp, [record]) for _ in range(times)]
    finally:
        await producer.stop()
    return outcomes, fake.seeks


async def test_an_event_that_keeps_failing_is_dead_lettered_and_the_partition_moves_on(
    engine: AsyncEngine, tenant: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:

    class Broken:
        async def apply_event(self, *_: object, **__: object) -> None:
            raise RuntimeError("fails every time, whatever the database does")

    marker = uuid.uuid4().hex
    record = ConsumerRecord(
        "customer.updated",
        0,
        7,
        0,
        0,
        None,
        json.dumps({"type": "customer.updated", "marker": marker}).encode(),
        None,
        0,
        0,
        (),
    )
    outcomes, seeks = await consume_repeatedly(kafka_bootstrap, Broken(), record, 5)
    assert outcomes == [None, None, None, None, 8]  # retried four times, then moved on
    assert seeks == [7, 7, 7, 7]
    records = await read_topic(
        kafka_bootstrap,
        "customer.updated.dlq",
        lambda rs: any(marker.encode() in r.value for r in rs),
    )
    found = next((r for r in records if marker.encode() in r.value), None)
    assert found is not None
    assert dict(found.headers)["dlq.error"].startswith(b"failed 5 times")


async def test_a_consumer_killed_between_commit_and_offset_commit_changes_nothing_twice(
    settings: Settings, engine: AsyncEngine, tenant: str, make_customer
) -> None:
    import sys

    from customer360.events.kafka import ensure_topics
    from customer360.observability import REGISTRY
    from tests.conftest import DATA_KEY

    cid = await make_customer()
    renewal = renewed_event(tenant, cid, contract_id="K9", renewed_at="2025-08-01T00:00:00Z")

    def duplicates() -> float:
        labels = {"topic": "contract.renewed", "outcome": "duplicate"}
        return REGISTRY.get_sample_value("c360_events_consumed_total", labels) or 0.0

    # A broker of its own: no other consumer group may take the record first.
    with embedded_kafka() as bootstrap:
        await ensure_topics(bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                "contract.renewed", json.dumps(renewal).encode(), key=str(cid).encode()
            )
            # when the process consuming it dies the instant its transaction commits
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__).with_name("consumer_killed.py")),
                bootstrap,
                settings.database_url or "",
                DATA_KEY,
                "c360-gateway",
                tenant,
            )
            assert await asyncio.wait_for(proc.wait(), 90) == 9
            assert await version_and_renewals(engine, cid) == (2, 1)
            # then the group's next consumer gets the record again (no offset was committed)
            # and recognises it: nothing changes twice
            before = duplicates()
            again = EventConsumer(bootstrap, use_cases(engine), producer)
            task = asyncio.create_task(again.run())
            try:

                async def seen_again() -> bool:
                    return duplicates() > before

                await wait_for(seen_again, timeout=60)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert await version_and_renewals(engine, cid) == (2, 1)
        finally:
            await producer.stop()


class _Counting(EventConsumer):
    """A member of the group that notes what it did with each record; applying takes 30 ms
    longer than usual, so a rebalance (tansu holds a join about 5 s) surely starts while a
    fetched batch is applied."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, int] = {}

    async def apply(self, record: ConsumerRecord[bytes, bytes]) -> str:
        await asyncio.sleep(0.03)
        outcome = await super().apply(record)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return outcome


async def _fill(bootstrap: str, tenant: str, total: int) -> AIOKafkaProducer:
    """The gateway's topics on `bootstrap`, and `total` new customers over three partitions."""
    from customer360.events.kafka import ensure_topics

    await ensure_topics(bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    for _ in range(total):
        ev = created_event(tenant)
        key = ev["data"]["customer_id"].encode()
        await producer.send("customer.created", json.dumps(ev).encode(), key=key)
    await producer.flush()
    return producer


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_rebalance_mid_batch_hands_partitions_over_where_the_member_stopped(
    engine: AsyncEngine, tenant: str
) -> None:
    total, group = 240, f"g-{uuid.uuid4().hex[:8]}"
    members: list[_Counting] = []
    tasks: list[asyncio.Task[None]] = []

    def applied() -> int:
        return sum(m.outcomes.get("applied", 0) for m in members)

    async def at_least(n: int) -> bool:
        return applied() >= n

    # given a broker holding 240 events over three partitions
    with embedded_kafka() as bootstrap:
        producer = await _fill(bootstrap, tenant, total)
        try:
            # when a second member joins the group while the first is applying a batch
            for _ in range(2):
                members.append(_Counting(bootstrap, use_cases(engine), producer, group_id=group))
                tasks.append(asyncio.create_task(members[-1].run()))
                await wait_for(lambda: at_least(30 * len(members)), timeout=60)
            await wait_for(lambda: at_least(total), timeout=90)
            await asyncio.sleep(1.5)  # anything redelivered would arrive by now
        finally:
            for task in tasks:
                await _stop(task)
            await producer.stop()
    first, second = members
    # then the first handed over exactly where it stopped: every event applied once, none
    # seen twice, no member restarted (a commit for a gone generation used to restart it),
    # and the newcomer took a share of the partitions
    assert applied() == total
    assert [m.outcomes.get("duplicate", 0) for m in members] == [0, 0]
    assert [m.restarts for m in members] == [0, 0]
    assert first.ownership is not None and first.ownership.revocations >= 1
    assert second.outcomes.get("applied", 0) > 0
    async with engine.connect() as c:
        stored = await c.execute(
            text("SELECT count(*) FROM processed_events WHERE tenant_id = :t"), {"t": tenant}
        )
    assert stored.scalar() == total


async def test_a_member_stopped_mid_batch_commits_exactly_what_it_applied(
    engine: AsyncEngine, tenant: str
) -> None:
    from aiokafka import TopicPartition

    group = f"g-{uuid.uuid4().hex[:8]}"
    # given a broker holding 240 events over three partitions
    with embedded_kafka() as bootstrap:
        producer = await _fill(bootstrap, tenant, 240)
        try:
            # when the member applying them is stopped in the middle of a batch
            member = _Counting(bootstrap, use_cases(engine), producer, group_id=group)
            task = asyncio.create_task(member.run())

            async def some() -> bool:
                return member.outcomes.get("applied", 0) >= 30

            await wait_for(some, timeout=60)
            await _stop(task)
            # then the group's offsets stand right after the last record it applied (the
            # next member starts there; a stop calls no rebalance listener). Read here, not
            # by a second member: tansu numbers the first generation 0, for which aiokafka
            # sends no LeaveGroup, so a newcomer would wait out the stopped one's session.
            reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
            await reader.start()  # not subscribed: it reads the group's offsets, never joins
            try:
                parts = [TopicPartition("customer.created", p) for p in range(3)]
                offsets = [await reader.committed(tp) for tp in parts]
            finally:
                await reader.stop()
        finally:
            await producer.stop()
    applied = member.outcomes.get("applied", 0)
    assert 30 <= applied < 240
    assert sum(o or 0 for o in offsets) == applied


async def test_an_event_waits_out_a_database_outage_however_long_and_is_never_dead_lettered(
    engine: AsyncEngine, tenant: str, kafka_bootstrap: str, make_customer
) -> None:

    from customer360.usecases import BackendUnavailable

    cid = await make_customer()
    real = use_cases(engine)

    class Restarting:
        """PostgreSQL restarting for longer than every retry of a bad event: then back."""

        calls = 0

        async def apply_event(self, *args: object, **kwargs: object) -> object:
            self.calls += 1
            if self.calls <= 8:
                raise BackendUnavailable("ConnectionRefusedError")
            return await real.apply_event(*args, **kwargs)  # type: ignore[arg-type]

    ev = renewed_event(tenant, cid)
    record = ConsumerRecord(
        "contract.renewed", 0, 11, 0, 0, None, json.dumps(ev).encode(), None, 0, 0, ()
    )
    outcomes, seeks = await consume_repeatedly(kafka_bootstrap, Restarting(), record, 9)
    # then it was retried from its offset through the outage and applied once it ended
    assert outcomes == [None] * 8 + [12]
    assert seeks == [11] * 8
    assert await version_and_renewals(engine, cid) == (2, 1)
