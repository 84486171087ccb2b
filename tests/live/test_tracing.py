"""Tracing (src/tracing.py, src/otel.py): a change is followed from the request, or the
consumed event, that caused it to its audit event on Kafka; with tracing off, nothing.

The traced gateway runs on a database of its own (outbox relays lead per database, so its
relay is the one that publishes), with an in-memory exporter installed through the very
setup function the gateway uses; the session's gateway is the untraced one.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from customer360.app import create_app
from customer360.data.cloudevents import AUDIT_TOPIC
from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys
from customer360.events.consumer import EventConsumer
from customer360.settings import Settings
from customer360.tracing import TraceContext, configure
from tests.conftest import Api, Server, run_server, scratch_database
from tests.helpers import apply_event, created_event, read_topic, use_cases
from tests.live.test_live import MOVE, SUB, auth, settled, wait_for
from tests.live.wsclient import connect


@dataclass
class Traced:
    url: str
    app: Starlette
    exporter: InMemorySpanExporter
    http: httpx.AsyncClient
    owner: AsyncEngine  # the test's own look at the database, untraced

    @property
    def engine(self) -> AsyncEngine:
        """The gateway's engine: every statement on it is a span."""
        engine: AsyncEngine = self.app.state.services.engine
        return engine

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture(scope="module")
async def traced(pg_server_url: str, settings: Settings) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    async with scratch_database(pg_server_url, "c360_trace") as url:
        owner = make_engine(url, keys=TenantKeys(settings.keyring()))
        gateway = settings.model_copy(update={"database_url": url})
        app = create_app(gateway, tracing=configure(gateway, exporter=exporter))
        try:
            async with (
                run_server(app) as base,
                httpx.AsyncClient(base_url=base, timeout=30) as http,
            ):
                yield Traced(base, app, exporter, http, owner)
        finally:
            await owner.dispose()


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def w3c(traceparent: str) -> tuple[int, int]:
    """(trace id, parent span id) of a `traceparent` value."""
    version, trace, parent, _flags = traceparent.split("-")
    assert version == "00"
    return int(trace, 16), int(parent, 16)


async def outbox_trace(engine: AsyncEngine, tenant: str, cid: uuid.UUID) -> Any:
    """The newest audit event of a customer, sealed or still queued with its change
    (migration 0017): (traceparent, published_at)."""
    async with engine.connect() as c:
        return (
            await c.execute(
                text(
                    "SELECT traceparent, published_at FROM ("
                    "SELECT id, traceparent, published_at FROM outbox WHERE tenant_id = :t "
                    "AND topic = :topic AND key = :k UNION ALL "
                    "SELECT outbox_id, traceparent, NULL FROM history_unsealed "
                    "WHERE tenant_id = :t AND topic = :topic AND key = :k"
                    ") e ORDER BY id DESC LIMIT 1"
                ),
                {"t": tenant, "topic": AUDIT_TOPIC, "k": str(cid)},
            )
        ).one()


async def audit_record(bootstrap: str, transition_id: str) -> ConsumerRecord[bytes, bytes]:
    def mine(r: ConsumerRecord[bytes, bytes]) -> bool:
        return transition_id.encode() in (r.value or b"")

    records = await read_topic(bootstrap, AUDIT_TOPIC, lambda rs: any(map(mine, rs)), timeout=30)
    (record,) = [r for r in records if mine(r)]
    return record


def headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def test_a_mutation_is_followed_from_its_request_to_the_audit_event_on_kafka(
    traced: Traced, tenant: str, kafka_bootstrap: str
) -> None:
    ev = created_event(tenant)
    cid = uuid.UUID(ev["data"]["customer_id"])
    await apply_event(traced.owner, ev)
    traced.exporter.clear()

    body = await Api(traced.http, tenant).gql(
        MOVE, {"i": {"customerId": str(cid), "stage": "Onboarded"}}
    )
    transition = body["data"]["updateLifecycleStage"]["transition"]["id"]
    spans = traced.spans()

    # the request's SERVER span, named by its route; everything below is in its trace
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.name == "POST /graphql"
    assert server.attributes is not None and server.attributes["http.route"] == "/graphql"
    trace = trace_id(server)
    assert {trace_id(s) for s in spans} == {trace}
    # the GraphQL operation, a child of the request, without the document or variables
    # (in the suite's verify mode strawberry's too, beside the compiled path's: it answers
    # from the outcome the first kept, and so writes nothing)
    operations = [s for s in spans if s.name.startswith("mutation")]
    assert operations and all(parent_id(s) == span_id(server) for s in operations)
    for op in operations:
        assert op.attributes is not None
        assert op.attributes["graphql.operation.type"] == "mutation"
        assert not any("query" in k or "variable" in k for k in op.attributes)
    # SQL statements (the write among them) and Redis commands (the rate limit) as children
    # of the one operation that wrote
    sql = [s for s in spans if s.attributes and s.attributes.get("db.system") == "postgresql"]
    statements = [str((s.attributes or {}).get("db.statement", "")) for s in sql]
    assert any("INSERT INTO history_unsealed" in q for q in statements), statements
    assert all(s.kind is SpanKind.CLIENT for s in sql)
    (operation,) = [op for op in operations if any(parent_id(s) == span_id(op) for s in sql)]
    assert all(parent_id(s) == span_id(operation) for s in sql)
    assert any(s.attributes and s.attributes.get("db.system") == "redis" for s in spans)

    # the outbox row keeps the context the change was written under: the operation's
    traceparent, _ = await outbox_trace(traced.owner, tenant, cid)
    assert w3c(traceparent) == (trace, span_id(operation))

    # the relay publishes it: the CloudEvent names where the change began, the Kafka header
    # the PRODUCER span of this publish, a child of the same operation
    record = await audit_record(kafka_bootstrap, transition)
    doc = json.loads(record.value or b"")
    assert doc["traceparent"] == traceparent
    assert doc["data"]["transition_id"] == transition and doc["tenantid"] == tenant

    def producer() -> list[ReadableSpan]:
        return [s for s in traced.spans() if s.kind is SpanKind.PRODUCER]

    (publish,) = await wait_for(lambda: _now(producer()), 10)
    assert publish.name == f"send {AUDIT_TOPIC}"
    assert (trace_id(publish), parent_id(publish)) == (trace, span_id(operation))
    assert w3c(headers(record)["traceparent"]) == (trace, span_id(publish))
    assert publish.attributes is not None
    assert publish.attributes["messaging.message.id"] == doc["id"]
    assert publish.attributes["messaging.destination.partition.id"] == str(record.partition)
    assert publish.attributes["messaging.kafka.offset"] == record.offset
    # neither the relay's own polling and marking nor probes (their SQL and Redis pings
    # included) made a trace of their own
    for probe in ("/readyz", "/healthz", "/metrics"):
        assert (await traced.http.get(probe)).status_code == 200
    assert {trace_id(s) for s in traced.spans()} == {trace}


async def _now(value: Any) -> Any:
    return value


async def test_a_consumed_event_continues_the_trace_its_record_carries(
    traced: Traced, tenant: str, kafka_bootstrap: str
) -> None:
    upstream = TraceContext(f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")
    by_header = created_event(tenant)
    # a producer that sets no header: the CloudEvent's own distributed-tracing attribute
    by_attribute = {**created_event(tenant), "traceparent": upstream.traceparent}

    def record(ev: dict[str, Any], offset: int, trace: TraceContext | None) -> Any:
        value = json.dumps(ev).encode()
        head = tuple(trace.headers()) if trace else ()
        return ConsumerRecord("customer.created", 0, offset, 0, 0, None, value, None, 0, 0, head)

    # the gateway's consumer, on its own (instrumented) engine and its own tracing
    services = traced.app.state.services
    consumer = EventConsumer(
        kafka_bootstrap,
        use_cases(services.engine),
        services.kafka,  # dead letters, through the gateway's own link
        group_id="trace-test",
        tracing=services.tracing,
    )
    for n, (ev, trace) in enumerate([(by_header, upstream), (by_attribute, None)]):
        traced.exporter.clear()
        assert await consumer.apply(record(ev, n, trace)) == "applied"
        spans = traced.spans()
        (consuming,) = [s for s in spans if s.kind is SpanKind.CONSUMER]
        assert consuming.name == "process customer.created"
        assert (trace_id(consuming), parent_id(consuming)) == w3c(upstream.traceparent)
        assert consuming.attributes is not None
        assert consuming.attributes["messaging.destination.name"] == "customer.created"
        assert consuming.attributes["c360.event.outcome"] == "applied"
        # what the event wrote, it wrote under that span: its SQL, and its audit row
        sql = [s for s in spans if s.attributes and s.attributes.get("db.system") == "postgresql"]
        assert sql and all(parent_id(s) == span_id(consuming) for s in sql)
        cid = uuid.UUID(ev["data"]["customer_id"])
        traceparent, _ = await outbox_trace(traced.owner, tenant, cid)
        assert w3c(traceparent) == (trace_id(consuming), span_id(consuming))

    # and the relay publishes the audit event of that creation into the upstream trace
    async def published() -> bool:
        row = await outbox_trace(traced.owner, tenant, cid)
        return row.published_at is not None

    await wait_for(published, 30)
    key = str(cid).encode()
    records = await read_topic(
        kafka_bootstrap, AUDIT_TOPIC, lambda rs: any(r.key == key for r in rs)
    )
    (audit,) = [r for r in records if r.key == key]
    assert w3c(json.loads(audit.value or b"")["traceparent"])[0] == w3c(upstream.traceparent)[0]
    assert w3c(headers(audit)["traceparent"])[0] == w3c(upstream.traceparent)[0]


async def test_what_a_websocket_does_is_not_traced(traced: Traced, tenant: str) -> None:
    ev = created_event(tenant)
    cid = ev["data"]["customer_id"]
    await apply_event(traced.owner, ev)
    await settled(traced.owner, tenant)  # its creation is not what the socket hears
    api = Api(traced.http, tenant)
    async with connect(traced.url, auth(api)) as ws:
        await ws.subscribe(SUB, {"cid": cid})
        traced.exporter.clear()
        await api.gql(MOVE, {"i": {"customerId": cid, "stage": "Onboarded"}})
        # the subscriber is told, reading the customer for it: no trace of its own
        (event,) = await ws.events(1, timeout=5.0)
        assert event["customer"]["lifecycle"]["stage"] == "Onboarded"
    (server,) = [s for s in traced.spans() if s.kind is SpanKind.SERVER]
    assert {trace_id(s) for s in traced.spans()} == {trace_id(server)}


async def test_a_query_string_never_reaches_a_span(traced: Traced, tenant: str) -> None:
    # a GraphQL GET carries the document and its variables in the URL
    traced.exporter.clear()
    variables = json.dumps({"q": "ann@example.com"})
    query = "query($q: String) { customers(filter: {search: $q}) { totalCount } }"
    api = Api(traced.http, tenant)
    await traced.http.get(
        "/graphql", params={"query": query, "variables": variables}, headers=api.headers()
    )
    (server,) = [s for s in traced.spans() if s.kind is SpanKind.SERVER]
    assert server.name == "GET /graphql"
    recorded = json.dumps({k: str(v) for k, v in (server.attributes or {}).items()})
    assert "example.com" not in recorded and "customers" not in recorded


async def test_with_tracing_off_nothing_is_recorded_and_the_outbox_keeps_no_context(
    server: Server,
    api: Api,
    make_customer: Any,
    engine: AsyncEngine,
    kafka_bootstrap: str,
    settings: Settings,
) -> None:
    # the session's gateway: the environment asks for no tracing
    assert not settings.tracing_enabled and configure(settings) is None
    names = [m.cls.__name__ for m in server.app.user_middleware]
    assert "OpenTelemetryMiddleware" not in names
    assert server.app.state.services.tracing is None
    # even with another gateway of this process tracing (its exporter would see a leak)
    exporter = InMemorySpanExporter()
    configure(settings, exporter=exporter)

    cid = await make_customer()
    body = await api.gql(MOVE, {"i": {"customerId": str(cid), "stage": "Onboarded"}})
    transition = body["data"]["updateLifecycleStage"]["transition"]["id"]
    traceparent, _ = await outbox_trace(engine, api.tenant, cid)
    assert traceparent is None
    record = await audit_record(kafka_bootstrap, transition)
    assert "traceparent" not in json.loads(record.value or b"")
    assert "traceparent" not in headers(record)
    assert exporter.get_finished_spans() == ()


async def test_a_compiled_query_is_an_operation_span_with_its_reads_below(
    traced: Traced, tenant: str
) -> None:
    ev = created_event(tenant)
    await apply_event(traced.owner, ev)
    traced.exporter.clear()
    doc = "query Card($id: ID!) { customer(id: $id) { name lifecycle { stage } } }"
    body = await Api(traced.http, tenant).gql(doc, {"id": ev["data"]["customer_id"]})
    assert body["data"]["customer"]["lifecycle"]["stage"] == "Prospect"
    spans = traced.spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    # the compiled path's operation span, and (in the suite's verify mode) strawberry's
    operations = [s for s in spans if s.name == "query Card"]
    assert operations and all(parent_id(s) == span_id(server) for s in operations)
    assert all(
        s.attributes and s.attributes["graphql.operation.name"] == "Card" for s in operations
    )
    # the reads on asyncpg itself are spans of the operation that made them, text only
    reads = [s for s in spans if s.kind is SpanKind.CLIENT and s.name == "SELECT"]
    assert reads
    names = {span_id(s): s.name for s in spans}
    assert {names.get(parent_id(s) or 0) for s in reads} == {"query Card"}, [
        (s.name, names.get(parent_id(s) or 0)) for s in spans
    ]
    assert all("$1" in str((s.attributes or {})["db.statement"]) for s in reads)
    assert not any(tenant in str(s.attributes) for s in reads)  # parameters never recorded
