"""Prometheus metrics and structured JSON logs, shared by every entry point."""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import time
from collections.abc import Iterator, MutableMapping
from typing import Any, Generic, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "c360_http_requests_total",
    "HTTP requests answered",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "c360_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
TRANSITIONS = Counter(
    "c360_lifecycle_transitions_total",
    "Committed lifecycle stage changes",
    ["source"],
    registry=REGISTRY,
)
EVENTS_CONSUMED = Counter(
    "c360_events_consumed_total",
    "Consumed events by outcome",
    ["topic", "outcome"],
    registry=REGISTRY,
)
# multiprocess_mode: how workers' values combine when one server runs several (metrics.py);
# only the relay leader measures the outbox, the others report 0.
OUTBOX_PENDING = Gauge(
    "c360_outbox_pending",
    "Outbox rows not yet published",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
OUTBOX_LAG = Gauge(
    "c360_outbox_lag_seconds",
    "Age of the oldest unpublished outbox row",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
OUTBOX_STALLS = Counter(
    "c360_outbox_stalls_total",
    "Relay drains that neither failed nor finished in time, abandoned and started afresh",
    ["sink"],
    registry=REGISTRY,
)
OUTBOX_FAILURES = Counter(
    "c360_outbox_failures_total",
    "Relay drains that failed (broker or Redis away, say); each is retried on fresh clients",
    ["sink"],
    registry=REGISTRY,
)
OUTBOX_DRAINS = Counter(
    "c360_outbox_drains_total",
    "Relay drains that found rows (the sealer's: seals), per sink; with the rows counter, "
    "how many changes one drain carries",
    ["sink"],
    registry=REGISTRY,
)
OUTBOX_ROWS = Counter(
    "c360_outbox_rows_total",
    "Rows the relay published (the sealer: history rows sealed), per sink",
    ["sink"],
    registry=REGISTRY,
)
SUBSCRIPTIONS = Gauge(
    "c360_subscriptions_active",
    "Open GraphQL subscriptions",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
SUBSCRIPTION_GROUPS = Gauge(
    "c360_subscription_groups",
    "Shared executions serving identical subscriptions",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
WRITE_BATCH = Histogram(
    "c360_write_batch_requests",
    "Requests whose stage changes one transaction wrote (customer360.batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
REJECTED = Counter(
    "c360_requests_rejected_total",
    "Requests refused before execution",
    ["reason"],
    registry=REGISTRY,
)

M = TypeVar("M", Counter, Gauge, Histogram)


class Children(Generic[M]):
    """A labelled metric's children, each looked up once: `labels()` takes a lock and turns
    every value into text on each call, a cost on every request for values that hardly
    change. (Nothing removes a child from our metrics, so a kept one stays the registered
    one.)"""

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self.known: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self.known.get(values)
        if child is None:
            child = self.known[values] = self.metric.labels(*values)
        return child


KNOWN_ROUTES = (
    "/graphql",
    "/api/v1/customers",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/graphiql-static",
)


METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"})


def _route(path: str) -> str:
    # Bounded label values: ids never become label values.
    return next((r for r in KNOWN_ROUTES if path.startswith(r)), "other")


HTTP_REQUESTS_BY = Children(HTTP_REQUESTS)
HTTP_DURATION_BY = Children(HTTP_DURATION)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route(scope["path"])
            method = scope["method"] if scope["method"] in METHODS else "other"
            HTTP_REQUESTS_BY(method, route, str(status)).inc()
            HTTP_DURATION_BY(method, route).observe(time.perf_counter() - start)


def _withhold_exception_messages(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Exceptions are logged by type and frames, not message: a driver's message quotes the
    offending value (asyncpg: "invalid input for query argument $1: 'ann@example.com'")."""
    for exc in event.get("exception") or ():
        if isinstance(exc, dict) and exc.get("exc_value"):
            exc["exc_value"] = "(withheld)"
            exc.pop("exc_notes", None)
    return event


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stdout for ELK, for our loggers and every library's alike.

    Tracebacks become structured frames without local variables: locals may hold tokens,
    personal data or SQL parameters.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            _withhold_exception_messages,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


GC_PAUSE = Histogram(
    "c360_gc_pause_seconds",
    "Pauses of Python's cyclic garbage collector, by generation",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)


class _GcTimer:
    """Times every collection: a full one stops the event loop, and every socket with it."""

    slow_seconds = 0.05

    def __init__(self) -> None:
        self.users = 0
        self.started = 0.0
        self.threshold = gc.get_threshold()

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        took = time.perf_counter() - self.started
        GC_PAUSE.labels(str(info["generation"])).observe(took)
        if took >= self.slow_seconds:
            get_logger("customer360.gc").warning(
                "long gc pause",
                generation=info["generation"],
                seconds=round(took, 3),
                collected=info["collected"],
            )


_GC_TIMER = _GcTimer()


@contextlib.contextmanager
def gc_monitor() -> Iterator[None]:
    """Collector set-up for a long-running server, with every pause timed.

    Process-wide and re-entrant (tests run several gateways in one process): the first user
    installs it, the last one out restores the collector."""
    timer = _GC_TIMER
    timer.users += 1
    if timer.users == 1:
        # What exists once the service is up (modules, the schema, pools) lives as long as
        # the process: frozen, a full collection no longer walks it on every pass. Fewer,
        # larger young collections promote less short-lived garbage into the old generation.
        timer.threshold = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        gc.callbacks.append(timer)
    try:
        yield
    finally:
        timer.users -= 1
        if timer.users == 0:
            gc.callbacks.remove(timer)
            gc.set_threshold(*timer.threshold)
            gc.unfreeze()
