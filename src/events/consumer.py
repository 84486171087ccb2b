"""Kafka consumers: CloudEvents in through the same use case as `c360 ingest`.

An offset is committed only after the event's transaction committed, so a crash or a
rebalance can redeliver but never skip; a redelivered event finds its (source, id) already
processed and changes nothing. A rebalance hands a partition over exactly where this member
stopped (`Ownership`), so then nothing is even redelivered. An event that cannot be parsed
or applied goes, unchanged, to `<topic>.dlq` and the partition keeps flowing. A failure of
our own (the database down) is retried from the same offset.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from customer360.observability import EVENTS_CONSUMED, get_logger
from customer360.usecases import BackendUnavailable, EventRejected, UseCases

from .kafka import CONSUMED_TOPICS, GROUP_ID
from .ownership import Ownership

if TYPE_CHECKING:
    from customer360.tracing import Tracing

log = get_logger("customer360.consumer")
MAX_ERROR = 500
MAX_TRIES = 5
HAND_OVER_TIMEOUT = 5.0
STOP_TIMEOUT = 15.0


class DeadLetters(Protocol):
    """Where rejected events go (a producer, or the gateway's Kafka link)."""

    async def send_and_wait(self, topic: str, value: bytes | None, **kwargs: Any) -> Any: ...


class EventConsumer:
    def __init__(
        self,
        bootstrap: str,
        usecases: UseCases,
        producer: DeadLetters,
        *,
        group_id: str = GROUP_ID,
        security: Mapping[str, Any] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.tracing = tracing
        self.security = dict(security or {})
        self.usecases = usecases
        self._tries: dict[tuple[str, int, int], int] = {}
        self.retry_base = 0.2
        self.producer = producer
        self.group_id = group_id
        self.restarts = 0
        self.ownership: Ownership | None = None

    def _consumer(self) -> tuple[AIOKafkaConsumer, Ownership]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            metadata_max_age_ms=30_000,
            **self.security,
        )
        own = Ownership(consumer)
        consumer.subscribe(topics=list(CONSUMED_TOPICS), listener=own)
        return consumer, own

    async def run(self) -> None:
        while True:
            consumer, own = self._consumer()
            self.ownership = own
            try:
                await consumer.start()
                await self._consume(own)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.restarts += 1
                log.warning("consumer restarting", error=type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                # Bounded: with the broker gone, a commit would retry for ever, and a stop
                # waits for a group join that may never be answered.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(own.hand_over(), HAND_OVER_TIMEOUT)
                try:
                    await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT)
                except TimeoutError:
                    log.warning("consumer did not stop in time; abandoned")

    async def _consume(self, own: Ownership) -> None:
        while True:
            batches = await own.consumer.getmany(timeout_ms=500, max_records=200)
            # Read with no await since the fetch: these records belong to this epoch's
            # assignment; a revocation while they are applied moves the epoch on.
            epoch = own.epoch
            for tp, records in batches.items():
                await self._partition(own, epoch, tp, records)
                await own.commit_if(epoch, tp)

    async def _partition(
        self,
        own: Ownership,
        epoch: int,
        tp: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> int | None:
        """Apply records in order while the partition stays ours; returns the offset to
        commit (next to read), None when none was applied."""
        done: int | None = None
        for record in records:
            async with own.lock:
                if own.epoch != epoch:
                    break  # revoked: the next owner starts right after `done`
                retry_in = await self._attempt(own, tp, record)
                if retry_in is None:
                    done = own.applied[tp] = record.offset + 1
                    continue
            await asyncio.sleep(retry_in)  # outside the lock: a revocation need not wait
            break
        return done

    async def _attempt(
        self, own: Ownership, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> float | None:
        """Apply the record, or dead-letter it once it failed MAX_TRIES times; returns how
        long to wait before retrying it (its partition sought back to it), None when done."""
        where = (record.topic, record.partition, record.offset)
        try:
            await self.apply(record)
        except BackendUnavailable as exc:
            # Our outage, not the event's fault: retried from the same offset for as long as
            # it lasts (a PostgreSQL restart took longer than every retry used to allow).
            tries = self._tries[where] = self._tries.get(where, 0) + 1
            log.warning(
                "database unavailable; event waits",
                topic=record.topic,
                offset=record.offset,
                error=str(exc),
                tries=tries,
            )
            own.consumer.seek(tp, record.offset)
            return min(self.retry_base * 2.0**tries, 5.0)
        except Exception as exc:
            tries = self._tries[where] = self._tries.get(where, 0) + 1
            if tries < MAX_TRIES:
                log.warning(
                    "event retry",
                    topic=record.topic,
                    offset=record.offset,
                    error=type(exc).__name__,
                    tries=tries,
                )
                own.consumer.seek(tp, record.offset)
                return min(self.retry_base * 2.0**tries, 5.0)
            # Not our outage after all (it outlived every retry): the event itself cannot
            # be applied, and one event must not stop its partition.
            await self.dead_letter(record, f"failed {tries} times: {type(exc).__name__}")
            EVENTS_CONSUMED.labels(record.topic, "rejected").inc()
        self._tries.pop(where, None)
        return None

    async def apply(self, record: ConsumerRecord[bytes, bytes]) -> str:
        if self.tracing is None:
            return await self._apply(record)
        with self.tracing.consuming(record, self.group_id) as span:
            outcome = await self._apply(record)
            span.outcome(outcome)
            return outcome

    async def _apply(self, record: ConsumerRecord[bytes, bytes]) -> str:
        try:
            applied = await self.usecases.apply_event(record.value or b"", topic=record.topic)
            outcome = applied.value
        except EventRejected as exc:
            await self.dead_letter(record, str(exc))
            outcome = "rejected"
        EVENTS_CONSUMED.labels(record.topic, outcome).inc()
        return outcome

    async def dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> None:
        headers = [
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.error", error[:MAX_ERROR].encode()),
        ]
        await self.producer.send_and_wait(
            f"{record.topic}.dlq",
            record.value,
            key=record.key,
            headers=[*headers, *(record.headers or ())],
        )
        log.info("event dead-lettered", topic=record.topic, offset=record.offset, error=error)
