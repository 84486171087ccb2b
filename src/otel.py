"""OpenTelemetry for one gateway; imported only once tracing is on (customer360.tracing).

Every gateway has a TracerProvider of its own, handed explicitly to each instrumentation; the
process-wide provider is never set. So two gateways in one process (the tests) trace apart,
and a library that traces through the global provider stays silent.

Traced: each HTTP request (its WebSockets are not: a span hours long helps nobody), its
GraphQL operation, SQL statements (per engine), Redis commands (per client), the relay's
publish of each audit event that carries a trace context, and each consumed event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.utils import (
    is_instrumentation_enabled,
    suppress_instrumentation,
)
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.middleware import Middleware
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from customer360.settings import Settings
from customer360.tracing import TRACEPARENT, TraceContext

SERVICE = "customer360"
# Probes and scrapes, unless OTEL_PYTHON_(ASGI_)EXCLUDED_URLS says otherwise (regular
# expressions searched in the path): a trace each, every few seconds, would bury the requests.
EXCLUDED_URLS = "^/healthz$,^/readyz$,^/metrics$"
WITHHELD = "(withheld)"
# The W3C format itself, whatever OTEL_PROPAGATORS says: it is what the outbox, the
# CloudEvent attribute and the Kafka header carry.
_W3C = TraceContextTextMapPropagator()


def current_trace_context() -> TraceContext | None:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)  # writes nothing when no span is current
    return TraceContext.from_carrier(carrier)


def _context(parent: TraceContext | None) -> Context:
    """A context whose span is `parent`, on nothing ambient: the relay and the consumers
    continue the trace a row or a record carries, never whatever happens to be current."""
    return _W3C.extract(parent.carrier(), context=Context()) if parent else Context()


def _carrier_of(span: Span) -> TraceContext:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span, Context()))
    found = TraceContext.from_carrier(carrier)
    assert found is not None  # a span made by a tracer always has a valid context
    return found


class Tracing:
    """One gateway's tracing: built by customer360.tracing.configure, shut down (flushed) by
    the gateway's lifespan."""

    def __init__(self, provider: TracerProvider, excluded_urls: str = EXCLUDED_URLS) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("customer360")
        self.excluded_urls = excluded_urls

    @classmethod
    def create(cls, settings: Settings, exporter: SpanExporter | None = None) -> Tracing:
        # The SDK reads the rest of the standard environment itself, now: the sampler
        # (OTEL_TRACES_SAMPLER), span limits, batching (OTEL_BSP_*) and the exporter's
        # endpoint, headers, timeout and certificates (OTEL_EXPORTER_OTLP_*).
        provider = TracerProvider(resource=_resource())
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(Withheld(exporter)))
        else:
            for name in settings.trace_exporters:
                if name == "otlp":
                    otlp = Withheld(OTLPSpanExporter())
                    provider.add_span_processor(BatchSpanProcessor(otlp))
                elif name == "console":
                    provider.add_span_processor(
                        SimpleSpanProcessor(Withheld(ConsoleSpanExporter()))
                    )
        excluded = (
            os.environ.get("OTEL_PYTHON_ASGI_EXCLUDED_URLS")
            or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
            or EXCLUDED_URLS
        )
        return cls(provider, excluded)

    async def shutdown(self) -> None:
        # Off the event loop: a last export may wait on the collector.
        await asyncio.to_thread(self.provider.shutdown)

    # --- the gateway's own parts --------------------------------------------------------

    def middleware(self) -> Middleware:
        """The outermost middleware: one SERVER span per HTTP request, continuing the
        caller's trace when its request carries a `traceparent`."""
        return Middleware(TracedRequests, tracing=self)

    def untraced(self, app: ASGIApp) -> ASGIApp:
        """`app` with nothing it does traced (the gateway's WebSockets)."""

        async def untraced(scope: Scope, receive: Receive, send: Send) -> None:
            with suppress_instrumentation():
                await app(scope, receive, send)

        return untraced

    def graphql_extension(self) -> SchemaExtension:
        """Made by the schema for each operation, in the request that runs it."""
        if not trace.get_current_span().get_span_context().is_valid:
            # A WebSocket operation: no request span to belong to (see the module's doc).
            return SchemaExtension()
        return GraphQLSpans(self.tracer)

    @contextlib.contextmanager
    def compiled_operation(self, kind: str, name: str | None) -> Iterator[None]:
        """The span of an operation the compiled path answers (gql/fastpath.py), as the
        extension above makes for strawberry's."""
        with self.tracer.start_as_current_span("graphql") as span:
            _name_operation(span, kind, name)
            yield

    def statement_span(self, statement: str) -> contextlib.AbstractContextManager[None]:
        """A CLIENT span for a statement on asyncpg itself (the API's reads, its stage
        changes): its text, never its parameters, named and described as the engine's
        instrumentation names its own."""
        return self._statement_span(statement)

    @contextlib.contextmanager
    def _statement_span(self, statement: str) -> Iterator[None]:
        if not is_instrumentation_enabled() or not trace.get_current_span().is_recording():
            # quiet() work, and reads outside any request or operation (a socket's):
            # a trace of their own for each would be noise, as the engine's rule says
            yield
            return
        tracer = self.provider.get_tracer("opentelemetry.instrumentation.asyncpg")
        name = statement.split(None, 1)[0] if statement else "SQL"
        attributes = {"db.system": "postgresql", "db.statement": statement}
        with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
            yield

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A CLIENT span per SQL statement on this engine (its text, never its parameters).

        The instrumentation's per-engine part only: its instrumentor would also patch
        create_engine and Engine.connect for the whole process."""
        tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
        # The pool-usage metric it wants to keep goes nowhere: /metrics is Prometheus's.
        usage = NoOpMeter(SERVICE).create_up_down_counter("db.client.connections.usage")
        EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]

    def instrument_redis(self, client: aioredis.Redis) -> None:
        """A CLIENT span per Redis command or pipeline on this client (arguments as `?`)."""
        RedisInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def quiet(self) -> contextlib.AbstractContextManager[None]:
        """For background loops (the relay's polling): their SQL and Redis calls are nobody's
        request, and would start a trace or two every second."""
        return suppress_instrumentation()

    # --- Kafka ---------------------------------------------------------------------------

    def publishing(
        self, topic: str, key: str, event_id: object, parent: TraceContext
    ) -> Publishing:
        """A PRODUCER span for one audit event, child of the change that wrote it."""
        attributes: dict[str, str] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": topic,
            "messaging.kafka.message.key": key,
        }
        if isinstance(event_id, str):
            attributes["messaging.message.id"] = event_id
        span = self.tracer.start_span(
            f"send {topic}", context=_context(parent), kind=SpanKind.PRODUCER, attributes=attributes
        )
        return Publishing(span)

    @contextlib.contextmanager
    def consuming(self, record: ConsumerRecord[bytes, bytes], group: str) -> Iterator[Consuming]:
        """A CONSUMER span, current while the event is applied, continuing the trace its
        record names (the `traceparent` header, else the CloudEvent's own attribute); what the
        event changes is written under it, so its audit event stays in that trace."""
        parent = TraceContext.from_headers(record.headers) or _from_event(record.value)
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.consumer.group.name": group,
            "messaging.kafka.offset": record.offset,
        }
        with self.tracer.start_as_current_span(
            f"process {record.topic}",
            context=_context(parent),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield Consuming(span)


class TracedRequests:
    """OpenTelemetry's ASGI middleware, but probes and scrapes run untraced whole: excluded
    from it alone, their SQL and Redis calls would each start a trace of their own."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.traced = OpenTelemetryMiddleware(
            app,
            tracer_provider=tracing.provider,
            default_span_details=_span_details,
            server_request_hook=_without_query,
            # A span for every ASGI message sent or received is noise on every request.
            exclude_spans=["receive", "send"],
        )
        patterns = [p.strip() for p in tracing.excluded_urls.split(",") if p.strip()]
        self.excluded = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.excluded is not None and self.excluded.search(scope.get("path", "")):
            with suppress_instrumentation():
                await self.app(scope, receive, send)
            return
        await self.traced(scope, receive, send)


class Publishing:
    """One audit event's publish span; it ends when the broker has (or has not) taken it."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.context = _carrier_of(span)  # for the record's `traceparent` header

    def failed(self, exc: BaseException) -> None:
        self.span.record_exception(exc)
        self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()

    def acked(self, future: asyncio.Future[Any]) -> None:
        """A done callback of the send's future."""
        if future.cancelled():
            self.span.set_status(Status(StatusCode.ERROR))
        elif (exc := future.exception()) is not None:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR))
        else:
            sent = future.result()
            self.span.set_attribute("messaging.destination.partition.id", str(sent.partition))
            self.span.set_attribute("messaging.kafka.offset", sent.offset)
        self.span.end()


class Consuming:
    def __init__(self, span: Span) -> None:
        self.span = span

    def outcome(self, outcome: str) -> None:
        self.span.set_attribute("c360.event.outcome", outcome)
        if outcome == "rejected":  # dead-lettered
            self.span.set_status(Status(StatusCode.ERROR))


def _from_event(value: bytes | None) -> TraceContext | None:
    """The CloudEvents distributed-tracing attribute, for a producer that set no header."""
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get(TRACEPARENT), str):
        return None
    return TraceContext.from_carrier({k: v for k, v in event.items() if isinstance(v, str)})


class GraphQLSpans(SchemaExtension):
    """The operation as a span of its request's trace, current while it runs (its SQL and
    Redis spans are its children). Neither the document nor the variables are recorded: they
    may hold personal data (a searched email). Fields are not spans: a page of customers
    would make thousands."""

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def on_operation(self) -> Iterator[None]:
        with self.tracer.start_as_current_span("graphql") as span:
            yield
            ctx = self.execution_context
            try:
                kind: str | None = ctx.operation_type.value
            except Exception:  # a document that did not parse, or names no such operation
                kind = None
            _name_operation(span, kind, ctx.operation_name)


def _name_operation(span: Span, kind: str | None, name: str | None) -> None:
    if kind is not None:
        span.set_attribute("graphql.operation.type", kind)
        span.update_name(f"{kind} {name}" if name else kind)
    if name:
        span.set_attribute("graphql.operation.name", name)


def _span_details(scope: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """`PATCH /api/v1/customers/{id}/lifecycle`: the route's template, never an id."""
    method = str(scope.get("method", ""))
    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        path = getattr(route, "path", None)
        if match is Match.FULL and path:
            return f"{method} {path}", {"http.route": path}
    return method, {}


def _without_query(span: Span, scope: dict[str, Any]) -> None:
    """A GraphQL GET carries its document and variables in the query string: the span keeps
    the path alone."""
    if not scope.get("query_string") or not span.is_recording():
        return
    recorded = getattr(span, "attributes", None) or {}
    if "http.url" in recorded:
        span.set_attribute("http.url", str(recorded["http.url"]).split("?", 1)[0])
    if "http.target" in recorded:
        span.set_attribute("http.target", str(scope.get("path", "")))
    if "url.query" in recorded:
        span.set_attribute("url.query", WITHHELD)


def _resource() -> Resource:
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them; ours without.
    try:
        version = metadata.version(SERVICE)
    except metadata.PackageNotFoundError:
        version = "unknown"
    resource = Resource.create({SERVICE_VERSION: version})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
    return resource


class Withheld(SpanExporter):
    """Exception messages and error descriptions never leave the process: a driver's message
    quotes the offending value (asyncpg: "invalid input for query argument $1:
    'ann@example.com'"), as observability.py withholds them from the logs. The exception's
    type and frames are kept."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([_withhold(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _withhold(span: ReadableSpan) -> ReadableSpan:
    if span.status.description is None and not any(e.name == "exception" for e in span.events):
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=[_withhold_event(e) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _withhold_event(event: Event) -> Event:
    if event.name != "exception":
        return event
    attributes = dict(event.attributes or {})
    attributes["exception.message"] = WITHHELD
    stack = attributes.get("exception.stacktrace")
    if isinstance(stack, str):
        # Frame lines alone (file, line, function): every other line may quote a message.
        frames = [line for line in stack.splitlines() if line.lstrip().startswith('File "')]
        attributes["exception.stacktrace"] = "\n".join(frames)
    return Event(event.name, attributes, event.timestamp)
