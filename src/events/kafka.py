"""Kafka topics, clients and the embedded-broker-friendly settings they share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from customer360.data.cloudevents import AUDIT_TOPIC
from customer360.lifecycle.config import CONSUMED_EVENT_TYPES

CONSUMED_TOPICS = CONSUMED_EVENT_TYPES  # a consumed event's topic is its type
GROUP_ID = "c360-gateway"


def all_topics() -> list[str]:
    return [*CONSUMED_TOPICS, *(f"{t}.dlq" for t in CONSUMED_TOPICS), AUDIT_TOPIC]


async def ensure_topics(
    bootstrap: str,
    partitions: int = 3,
    *,
    dlq_partitions: int = 1,
    replication: int = 1,
    dlq_retention_ms: int | None = None,
    security: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics the gateway uses that do not exist yet; returns those created.

    The gateway calls it at start (unless C360_KAFKA_CREATE_TOPICS=0); `c360 kafka-topics`
    with a production cluster's partitions, replication and dead-letter retention."""
    dlq_configs = {} if dlq_retention_ms is None else {"retention.ms": str(dlq_retention_ms)}

    def new(topic: str) -> NewTopic:
        if topic.endswith(".dlq"):
            return NewTopic(topic, dlq_partitions, replication, topic_configs=dlq_configs)
        return NewTopic(topic, partitions, replication)

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=10_000, **(security or {})
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in all_topics() if t not in existing]
        if missing:
            await admin.create_topics([new(t) for t in missing])
        return missing
    finally:
        await admin.close()


def make_producer(bootstrap: str, security: Mapping[str, Any] | None = None) -> AIOKafkaProducer:
    # acks=all: a change counts as published only once every in-sync replica has it.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=2,
        request_timeout_ms=10_000,
        retry_backoff_ms=200,
        **(security or {}),
    )
