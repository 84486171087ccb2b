"""Kafka topics, clients and the embedded-broker-friendly settings they share."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from customer360.data.cloudevents import AUDIT_TOPIC

CONSUMED_TOPICS = (
    "customer.created",
    "customer.updated",
    "contract.renewed",
    "support.issue.opened",
    "support.issue.closed",
)
GROUP_ID = "c360-gateway"


def all_topics() -> list[str]:
    return [*CONSUMED_TOPICS, *(f"{t}.dlq" for t in CONSUMED_TOPICS), AUDIT_TOPIC]


async def ensure_topics(bootstrap: str, partitions: int = 3) -> list[str]:
    """Create the topics the gateway uses that do not exist yet; returns those created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in all_topics() if t not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(t, 1 if t.endswith(".dlq") else partitions, 1) for t in missing]
            )
        return missing
    finally:
        await admin.close()


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    # acks=all: a change counts as published only once every in-sync replica has it.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=2,
        request_timeout_ms=10_000,
        retry_backoff_ms=200,
    )
