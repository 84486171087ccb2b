"""Which partitions a consumer may still apply and commit, across group rebalances.

A rebalance can start while a fetched batch is being applied. Revocation waits for the
record in flight (the lock), commits what was applied, and moves the epoch on, so the rest
of a batch fetched before it is dropped: the partition's next owner starts right after the
last applied record, and this member neither applies more of it nor commits for a
generation that is gone (which failed with CommitFailedError and restarted the consumer).
A partition assigned again resumes from its committed offset, where it was handed over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from customer360.observability import get_logger

log = get_logger("customer360.consumer")
COMMIT_TIMEOUT = 10.0


class Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.lock = asyncio.Lock()  # held while one record is applied
        self.epoch = 0
        self.applied: dict[TopicPartition, int] = {}  # next offset to read, not committed
        self.revocations = 0

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = set(revoked)  # empty when joining for the first time
        async with self.lock:
            self.epoch += 1
            self.revocations += bool(revoked)
            await self._commit(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Nothing to load: positions come from the offsets committed at revocation."""

    async def commit_if(self, epoch: int, tp: TopicPartition) -> None:
        async with self.lock:
            if self.epoch == epoch:
                await self._commit({tp})

    async def hand_over(self) -> None:
        """On stop, which is not a rebalance and calls no listener."""
        async with self.lock:
            self.epoch += 1
            await self._commit(None)

    async def _commit(self, tps: set[TopicPartition] | None) -> None:
        offsets = {tp: o for tp, o in self.applied.items() if tps is None or tp in tps}
        if not offsets:
            return
        try:
            # Bounded: aiokafka retries a commit while the coordinator is unreachable, for
            # ever, and a stop waits for the listener that would be stuck in it.
            await asyncio.wait_for(self.consumer.commit(offsets), COMMIT_TIMEOUT)
        except (CommitFailedError, IllegalStateError, TimeoutError) as exc:
            # Membership lost (a session timeout) or the broker gone: the next owner gets
            # these records again and finds them processed; nothing is applied twice.
            log.warning("offsets not committed", error=type(exc).__name__, partitions=len(offsets))
        # Not on cancellation: what was applied then stays to be handed over at the stop.
        for tp in offsets:
            self.applied.pop(tp, None)
