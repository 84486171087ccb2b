"""The background side of a gateway process: Kafka link, consumers, relays, the hub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.observability import get_logger
from customer360.settings import Settings
from customer360.tls import kafka_options
from customer360.usecases import UseCases

from .consumer import EventConsumer
from .hub import Hub
from .kafka import ensure_topics, make_producer
from .pubsub import ResilientRedisBackend
from .relay import KafkaSink, OutboxRelay, OutboxRow, RedisSink, Sink, SinkNotReady
from .sealer import Sealer
from .signing import TargetPolicy
from .webhooks import WebhookSink, WebhookWorker

if TYPE_CHECKING:
    from customer360.tracing import Tracing

log = get_logger("customer360.runtime")


class KafkaLink:
    """A producer that (re)connects in the background: the gateway starts and keeps
    committing while Kafka is away; the outbox holds what it could not publish yet."""

    def __init__(
        self, bootstrap: str, create_topics: bool, security: Mapping[str, Any] | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.create_topics = create_topics
        self.security = dict(security or {})
        self.producer: AIOKafkaProducer | None = None
        self.ready = asyncio.Event()

    async def connect(self) -> None:
        delay = 0.5
        while True:
            producer = make_producer(self.bootstrap, self.security)
            try:
                if self.create_topics:
                    created = await ensure_topics(self.bootstrap, security=self.security)
                    if created:
                        log.info("kafka topics created", topics=created)
                await producer.start()
            except asyncio.CancelledError:
                await producer.stop()
                raise
            except Exception as exc:
                log.warning("kafka unavailable", error=type(exc).__name__)
                await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.producer = producer
            self.ready.set()
            return

    async def renew(self) -> None:
        """A fresh producer (fresh metadata, fresh connections) and the topics made again if
        they are gone: after a stalled publish, say to a broker that came back empty."""
        old, self.producer = self.producer, None
        self.ready.clear()
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), 5.0)
        await self.connect()

    async def send_and_wait(self, *args: Any, **kwargs: Any) -> Any:
        """Through whichever producer is current (dead letters of the consumers)."""
        if self.producer is None:
            raise ConnectionError("kafka not connected")
        return await self.producer.send_and_wait(*args, **kwargs)

    async def check(self) -> None:
        if self.producer is None:
            raise ConnectionError("not connected")
        await asyncio.wait_for(self.producer.client.fetch_all_metadata(), 2.0)

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()


class LazyKafkaSink:
    name, column = KafkaSink.name, KafkaSink.column

    def __init__(self, link: KafkaLink, tracing: Tracing | None = None) -> None:
        self.link = link
        self.tracing = tracing

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        if self.link.producer is None:
            raise SinkNotReady("kafka not connected yet")
        await KafkaSink(self.link.producer, self.tracing).publish(rows)

    async def reset(self) -> None:
        if self.link.producer is None:
            # Not connected yet (a stall before the first connection): it is on its way, and
            # a second one made beside it would leak a producer.
            await self.link.ready.wait()
            return
        await self.link.renew()


def kafka_bootstrap(settings: Settings) -> str | None:
    value = settings.kafka_bootstrap
    return None if value is None or value.lower() == "off" else value


@contextlib.asynccontextmanager
async def background(
    settings: Settings,
    engine: AsyncEngine,
    redis: aioredis.Redis,
    usecases: UseCases,
    sealer: Sealer,
    tracing: Tracing | None = None,
) -> AsyncIterator[tuple[Hub, KafkaLink | None]]:
    assert settings.redis_url
    tasks: list[asyncio.Task[None]] = []
    link: KafkaLink | None = None
    sinks: list[Sink | Sealer] = [RedisSink(redis)]
    bootstrap = kafka_bootstrap(settings)
    async with Hub(ResilientRedisBackend(settings.redis_url)) as hub:
        if bootstrap is not None:
            link = KafkaLink(bootstrap, settings.kafka_create_topics, kafka_options(settings))
            sinks.insert(0, LazyKafkaSink(link, tracing))
            consume = _consume_when_ready(link, bootstrap, usecases, tracing)
            tasks.append(asyncio.create_task(consume))
        sinks.append(WebhookSink())  # deliveries made from the outbox, in order
        sinks.append(sealer)  # leads beside them: audit events are published once sealed
        relay = OutboxRelay(
            engine,
            sinks,
            processed_retention_days=settings.processed_event_retention_days,
            tracing=tracing,
        )
        tasks.append(asyncio.create_task(relay.run()))
        worker = webhook_worker(settings, engine, tracing) if settings.webhooks else None
        if worker is not None:
            tasks.append(asyncio.create_task(worker.run()))
        try:
            yield hub, link
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            if link is not None:
                await link.close()
            if worker is not None:
                await worker.close()


def webhook_worker(
    settings: Settings, engine: AsyncEngine, tracing: Tracing | None = None
) -> WebhookWorker:
    return WebhookWorker(
        engine,
        schedule=settings.webhook_retry_schedule,
        timeout=settings.webhook_timeout_seconds,
        max_response_bytes=settings.webhook_max_response_bytes,
        disable_after=(
            settings.webhook_disable_after_failures,
            settings.webhook_disable_after_seconds,
        ),
        poll_seconds=settings.webhook_poll_seconds,
        policy=webhook_policy(settings),
        tracing=tracing,
    )


def webhook_policy(settings: Settings) -> TargetPolicy:
    """Where webhooks may go: development may allow http:// and private addresses."""
    return TargetPolicy(dev_targets=settings.webhook_dev_targets and not settings.production)


async def _consume_when_ready(
    link: KafkaLink, bootstrap: str, usecases: UseCases, tracing: Tracing | None
) -> None:
    await link.connect()
    assert link.producer is not None
    consumer = EventConsumer(bootstrap, usecases, link, security=link.security, tracing=tracing)
    await consumer.run()
