"""The transactional outbox relay: committed changes out to Kafka and Redis pub/sub.

One worker per sink, each with its own publish mark, so Kafka being down never holds back the
live UI (and the other way round). Each sink has a single leader across all gateway processes
(a lease: a session advisory lock), which publishes rows in outbox order: one customer's
changes are written one after another under its row lock, so their order is kept. A row is
marked only after its sink acknowledged it, so a crash can only cause a re-publish (consumers
dedupe by CloudEvent id), never a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from customer360.data.cache import Invalidator
from customer360.data.cloudevents import AUDIT_TOPIC
from customer360.data.outbox import NOTIFY_CHANNEL
from customer360.data.retention import forget_expired
from customer360.data.scope import system_scope
from customer360.observability import (
    OUTBOX_DRAINS,
    OUTBOX_FAILURES,
    OUTBOX_LAG,
    OUTBOX_PENDING,
    OUTBOX_ROWS,
    OUTBOX_STALLS,
    get_logger,
)
from customer360.tracing import TraceContext

from .sealer import Sealer

if TYPE_CHECKING:
    from customer360.otel import Publishing
    from customer360.tracing import Tracing

log = get_logger("customer360.relay")


def channel(tenant: str) -> str:
    """Where a tenant's changes are announced: a process subscribes to the tenants its sockets
    watch, and neither receives nor decodes the others' changes."""
    return f"c360:lifecycle:{tenant}"


RETENTION_DAYS = 7
# A drain stuck longer (a half-open connection, a sink that never answers) is abandoned.
DRAIN_TIMEOUT = 60.0
# How long an abandoned drain gets to honour its cancellation before it is left behind.
CANCEL_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    tenant_id: str
    topic: str
    key: str
    # The payload as PostgreSQL gave it: the Redis sink passes it on unparsed (under bulk
    # writes, parsing the rows alone was 2.9% of a gateway's samples), the others parse it.
    stored: str
    history_seq: int | None
    # The W3C context of the write (migration 0008); None when it was not traced.
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def payload(self) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.stored)
        return doc

    @property
    def trace(self) -> TraceContext | None:
        if self.traceparent is None:
            return None
        return TraceContext(self.traceparent, self.tracestate)


class Sink(Protocol):
    name: str
    column: str

    async def publish(self, rows: Sequence[OutboxRow]) -> None: ...

    async def reset(self) -> None:
        """After a stalled or failed drain: drop whatever client state may be wedged or
        stale."""
        ...


class DrainStalled(Exception):
    """A drain neither failed nor finished within its time: its connection and the sink's
    client are suspect, so the leader starts afresh."""


class DrainInterrupted(Exception):
    """A drain ended in a cancellation nobody asked for: a client library cancelled a future
    it had handed out (aiokafka does so to in-flight batches when it reconnects). That is a
    failed publish to retry, never a reason for the relay to stop."""


class SinkNotReady(ConnectionError):
    """The sink's client is still making its first connection (the gateway starts while
    Kafka is away): tried again shortly, neither counted as a failure nor reset."""


class KafkaSink:
    name, column = "kafka", "published_at"

    def __init__(self, producer: AIOKafkaProducer, tracing: Tracing | None = None) -> None:
        self.producer = producer
        self.tracing = tracing

    async def reset(self) -> None:
        return None

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        # Cache-only rows (profile changes) are not audit events; they are just marked.
        rows = [r for r in rows if r.topic == AUDIT_TOPIC]
        futures = []
        for r in rows:
            payload, headers = r.payload, [("content-type", b"application/cloudevents+json")]
            span: Publishing | None = None
            if (traced := r.trace) is not None:
                # CloudEvents distributed tracing: where the change began, the same on every
                # re-publish; the header names this publish (or, untraced here, passes the
                # stored context on, so the trace is not cut).
                payload = {**payload, **traced.carrier()}
                if self.tracing is not None:
                    span = self.tracing.publishing(r.topic, r.key, payload.get("id"), traced)
                headers += (span.context if span is not None else traced).headers()
            try:
                sent = await self.producer.send(
                    r.topic, orjson.dumps(payload), key=r.key.encode(), headers=headers
                )
            except BaseException as exc:
                if span is not None:
                    span.failed(exc)
                raise
            if span is not None:
                sent.add_done_callback(span.acked)
            futures.append(sent)
        await asyncio.gather(*futures)


class RedisSink:
    name, column = "redis", "redis_published_at"

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.invalidate = Invalidator(redis)

    async def reset(self) -> None:
        # A wedged connection is not handed out again; the pool makes new ones.
        with contextlib.suppress(Exception):
            await self.redis.connection_pool.disconnect()

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        # One generation per key, the last row's: the ones before it would be overwritten
        # within the same call (a bulk call's 300 rows set their tenant's summary once).
        customers: dict[tuple[str, str], str] = {}
        summaries: dict[str, str] = {}
        messages: list[tuple[str, bytes]] = []
        for r in rows:
            customers[(r.tenant_id, r.key)] = str(r.id)
            if r.topic == AUDIT_TOPIC:
                summaries[r.tenant_id] = str(r.id)
                event = orjson.Fragment(r.stored)
                message = {"tenant": r.tenant_id, "seq": r.history_seq, "event": event}
                messages.append((channel(r.tenant_id), orjson.dumps(message)))
        await self.invalidate(customers, summaries, messages)


# No row locks: each sink has one leader, and locking rows would let one sink's slow
# publish make the other skip rows and publish out of order. An audit event waits for its
# history row's seal (its seq and chain head, events/sealer.py); one customer's rows are
# sealed in the order they were written, so no sink sees them out of order.
# On the lease's asyncpg connection itself (no SQLAlchemy rows; the payload parsed by
# orjson): a drain of a bulk call's 300 rows spent more there than in its statements.
_SELECT = (
    "SELECT id, tenant_id, topic, key, payload::text, history_seq, traceparent, tracestate "
    "FROM outbox "
    "WHERE {col} IS NULL AND (history_id IS NULL OR history_seq IS NOT NULL) "
    "ORDER BY {order} LIMIT $1"
)
# Live subscribers resume by position (`seq`, given at seal, in seal order per tenant):
# the Redis sink publishes in that order, so no socket sees a later position before an
# earlier one and resumes past it. Kafka keeps outbox order (one customer's changes are
# written one after another, so theirs is kept either way).
_ORDER = {"redis_published_at": "history_seq NULLS FIRST, id"}
_MARK = "UPDATE outbox SET {col} = now() WHERE id = ANY($1)"


def _asked_to_stop() -> bool:
    """Whether this task itself is being cancelled (its owner stops it)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class OutboxRelay:
    """One leader per sink across all processes, each on a connection of its own.

    The lease (a session advisory lock), the LISTEN and every drain share that connection: it
    is never pooled (invalidated on exit), so it may hold session state, the system scope of
    row-level security included, and a leader that loses it cannot start another batch. In
    autocommit a drain costs two round trips (read, mark) beside the sink's publish: on an
    event loop also busy writing frames to many sockets, every await is a wait in line.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        sinks: Sequence[Sink | Sealer],
        *,
        batch: int = 500,
        poll_seconds: float = 1.0,
        drain_timeout: float = DRAIN_TIMEOUT,
        processed_retention_days: int = 14,
        tracing: Tracing | None = None,
    ) -> None:
        self.engine = engine
        self.tracing = tracing
        self.sinks = list(sinks)
        # What publishes from the outbox (the sealer leads beside them, marking nothing).
        self._sinks = [s for s in self.sinks if not isinstance(s, Sealer)]
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.drain_timeout = drain_timeout
        self.processed_retention_days = processed_retention_days

    async def drain_once(self, conn: AsyncConnection, sink: Sink) -> int:
        """Publish one batch in outbox order, then mark it; rows stay pending if the sink
        fails, and a crash between publish and mark re-publishes (never loses)."""
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        order = _ORDER.get(sink.column, "id")
        found = await raw.fetch(_SELECT.format(col=sink.column, order=order), self.batch)
        if not found:
            return 0
        rows = [OutboxRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in found]
        await sink.publish(rows)
        # A sink that publishes into this database (webhook deliveries) does it in its mark.
        mark = getattr(sink, "mark", None) or _MARK.format(col=sink.column)
        await raw.execute(mark, [r.id for r in rows])
        return len(rows)

    async def run(self) -> None:
        # Untraced: the polling is nobody's request (each publish has its own span).
        with self.tracing.quiet() if self.tracing is not None else contextlib.nullcontext():
            loops = (self._sink_loop(sink, n == 0) for n, sink in enumerate(self.sinks))
            await asyncio.gather(*loops)

    async def _sink_loop(self, sink: Sink | Sealer, keeps_books: bool) -> None:
        """Lead when the sink's lock is free, follow otherwise; reconnect after any failure."""
        while True:
            try:
                conn = await self.engine.connect()
                try:
                    await self._lead(conn, sink, keeps_books)
                finally:
                    # Session locks, LISTEN and settings must never return to the pool.
                    await conn.invalidate()
                    await conn.close()
            except asyncio.CancelledError:
                if _asked_to_stop():
                    raise
                # A stray cancellation from inside a library must not end the relay
                # silently: every committed change would wait for a restart.
                log.error("relay loop interrupted; starting again", sink=sink.name)
                await asyncio.sleep(1.0)
            except DrainStalled:
                await sink.reset()
            except Exception as exc:
                log.warning("relay connection lost", sink=sink.name, error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _lead(self, conn: AsyncConnection, sink: Sink | Sealer, keeps_books: bool) -> None:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        # Session-wide on this private connection: the relay serves every tenant. A drain
        # reads a few rows; PostgreSQL's planner, misled by a pending-rows estimate from the
        # last ANALYZE, would start parallel workers for it (processes, at every drain).
        await conn.execute(
            text(
                "SELECT set_config('app.scope', 'system', false), "
                "set_config('max_parallel_workers_per_gather', '0', false)"
            )
        )
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        wake = asyncio.Event()
        await raw.add_listener(
            sink.channel if isinstance(sink, Sealer) else NOTIFY_CHANNEL, lambda *_: wake.set()
        )
        lock = f"c360-relay:{sink.name}"
        # Follow until the lock is free; the polling query doubles as the connection check.
        while not await raw.fetchval(  # noqa: ASYNC110 - the lock lives in PostgreSQL
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", lock
        ):
            await asyncio.sleep(self.poll_seconds)
        log.info("relay leading", sink=sink.name)
        if isinstance(sink, Sealer):
            sink.lead(wake)  # this process's own writes wake it directly
            try:
                await self._drain_loop(conn, raw, wake, sink, keeps_books)
            finally:
                sink.lead(None)
        else:
            await self._drain_loop(conn, raw, wake, sink, keeps_books)

    async def _drain_loop(
        self,
        conn: AsyncConnection,
        raw: Any,
        wake: asyncio.Event,
        sink: Sink | Sealer,
        keeps_books: bool,
    ) -> None:
        backoff, ticks, last_books = 0.2, 0, 0.0
        loop = asyncio.get_running_loop()
        while True:
            wake.clear()
            try:
                drain = (
                    sink.drain(conn) if isinstance(sink, Sealer) else self.drain_once(conn, sink)
                )
                n = await self._bounded(drain, sink)
                backoff = 0.2
                if n:
                    OUTBOX_DRAINS.labels(sink.name).inc()
                    OUTBOX_ROWS.labels(sink.name).inc(n)
            except (asyncio.CancelledError, DrainStalled):
                raise
            except SinkNotReady:
                await asyncio.sleep(self.poll_seconds)
                continue
            except Exception as exc:
                OUTBOX_FAILURES.labels(sink.name).inc()
                log.warning("relay publish failed", sink=sink.name, error=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                # A sink that failed is retried on fresh clients: a broker that came back
                # empty acknowledges batches for partitions a stale producer still believes
                # in (tansu does), while a fresh one makes the topics again before it sends.
                await sink.reset()
                # A lease connection that died is not a lease: this raises, and the loop
                # reconnects and competes for the lock again.
                await asyncio.wait_for(raw.fetchval("SELECT 1"), 5.0)
                continue
            if keeps_books and loop.time() - last_books >= 5.0:
                last_books = loop.time()
                await self._gauge(conn)
                ticks += 1
                if ticks % 60 == 1:  # about every five minutes
                    await self.sweep(conn)
                    await forget_expired(conn, self.processed_retention_days)
            if n < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.poll_seconds)

    async def _bounded(self, drain: Coroutine[Any, Any, int], sink: Sink | Sealer) -> int:
        """The drain's result, or DrainStalled once it has neither failed nor finished in
        time; seen in the log and in c360_outbox_stalls_total, never silent. Unlike
        asyncio.wait_for, this does not wait for ever on a drain that ignores cancellation
        (a client wedged in a shielded wait): it is left behind with its connection."""
        task = asyncio.ensure_future(drain)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.drain_timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            if task.cancelled():
                raise DrainInterrupted(sink.name)
            return task.result()
        OUTBOX_STALLS.labels(sink.name).inc()
        log.error("relay drain stalled; abandoned", sink=sink.name, seconds=self.drain_timeout)
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_GRACE)
        raise DrainStalled(sink.name)

    async def sweep(self, conn: AsyncConnection) -> int:
        """Forget rows every configured sink published, once they are a week old (a sink
        that is not configured, Kafka when `off`, does not hold rows back)."""
        done = " AND ".join(f"{s.column} IS NOT NULL" for s in self._sinks) or "true"
        await system_scope(conn)
        result = await conn.execute(
            text(
                f"DELETE FROM outbox WHERE created_at < now() - make_interval(days => :days) "  # noqa: S608
                f"AND {done}"
            ),
            {"days": RETENTION_DAYS},
        )
        await conn.commit()
        return int(result.rowcount or 0)

    async def _gauge(self, conn: AsyncConnection) -> None:
        # Audit events still queued with their change count too: the seal writes their
        # outbox rows (migration 0017), and they are as unpublished as the rows it wrote.
        cond = " OR ".join(f"{s.column} IS NULL" for s in self._sinks) or "false"
        await system_scope(conn)
        row = (
            await conn.execute(
                text(
                    f"SELECT count(*), COALESCE(extract(epoch FROM now() - min(created_at)), 0) "  # noqa: S608
                    f"FROM (SELECT created_at FROM outbox WHERE {cond} UNION ALL "
                    "SELECT created_at FROM history_unsealed WHERE outbox_id IS NOT NULL) p"
                )
            )
        ).one()
        await conn.commit()
        OUTBOX_PENDING.set(row[0])
        OUTBOX_LAG.set(float(row[1]))
