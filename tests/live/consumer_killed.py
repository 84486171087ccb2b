"""A gateway's Kafka consumer that dies the instant its transaction for one tenant commits,
before it can commit the offset: run as a process by test_resilience.py, which kills nothing
itself; the process ends with os._exit, as a crash or an OOM kill would end it."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from customer360.data.crypto import Keyring
from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys
from customer360.events.consumer import EventConsumer
from customer360.usecases import UseCases

CRASHED = 9


async def main(bootstrap: str, database_url: str, data_key: str, group: str, tenant: str) -> None:
    def die_after_commit(committed_tenant: str, _: Iterable[uuid.UUID]) -> None:
        if committed_tenant == tenant:
            os._exit(CRASHED)  # the offset commit that would follow never happens

    engine = make_engine(database_url, keys=TenantKeys(Keyring.parse(data_key)))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    usecases = UseCases(engine, on_commit=die_after_commit)
    consumer = EventConsumer(bootstrap, usecases, producer, group_id=group)
    await asyncio.wait_for(consumer.run(), 90)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
