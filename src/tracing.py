"""Opt-in OpenTelemetry tracing: what the rest of the gateway sees of it.

Tracing is off unless OpenTelemetry's standard environment asks for it (Settings.
trace_exporters). Off, `configure` answers None and nothing is installed: no middleware, no
GraphQL extension, no listener on the engine, no wrapper on Redis; neither the SDK's tracing,
the instrumentations nor the exporter are even imported (customer360.otel, which imports
them, is loaded by `configure` alone), so the gateway runs without the `tracing` extra.

On, the W3C context of the span a change is written under is kept on its outbox row, and the
relay publishes the audit event with it: the CloudEvents distributed-tracing attributes
`traceparent`/`tracestate` name where the change began, and the Kafka record's `traceparent`
header names its publish span. A change is followed from the request (or the consumed event)
that caused it to whoever consumes the audit event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from customer360.otel import Tracing
    from customer360.settings import Settings

__all__ = ["TraceContext", "Tracing", "configure", "outbox_trace_context"]

TRACEPARENT, TRACESTATE = "traceparent", "tracestate"

# The current span's context as a carrier; None until a gateway of this process traces.
_current: Callable[[], TraceContext | None] | None = None


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A W3C trace context as it travels: the `traceparent` and `tracestate` values."""

    traceparent: str
    tracestate: str | None = None

    @classmethod
    def from_carrier(cls, carrier: Mapping[str, str]) -> TraceContext | None:
        parent = carrier.get(TRACEPARENT)
        if not parent:
            return None
        return cls(parent, carrier.get(TRACESTATE) or None)

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]] | None) -> TraceContext | None:
        """From a Kafka record's headers (the first of each name wins)."""
        carrier: dict[str, str] = {}
        for name, value in headers or ():
            if name in (TRACEPARENT, TRACESTATE) and name not in carrier:
                carrier[name] = value.decode("latin-1")
        return cls.from_carrier(carrier)

    def carrier(self) -> dict[str, str]:
        """As CloudEvent extension attributes (and the propagator's carrier)."""
        out = {TRACEPARENT: self.traceparent}
        if self.tracestate:
            out[TRACESTATE] = self.tracestate
        return out

    def headers(self) -> list[tuple[str, bytes]]:
        return [(k, v.encode()) for k, v in self.carrier().items()]


def outbox_trace_context() -> TraceContext | None:
    """The context of the span current here, for the outbox row a change writes.

    None when no gateway of this process traces (a None check, nothing more) or when this
    change is written under no span (a gateway that does not trace, `c360 ingest`)."""
    return _current() if _current is not None else None


def configure(settings: Settings, *, exporter: SpanExporter | None = None) -> Tracing | None:
    """A gateway's tracing, or None when the settings do not ask for it.

    Given an `exporter`, every span goes there (synchronously) instead of to the exporters
    the environment names, and tracing is on whatever it says: the tests hand it an
    in-memory exporter. The environment is read once, here; nothing connects anywhere until
    the first export."""
    if exporter is None and not settings.tracing_enabled:
        return None
    problems = settings.tracing_problems()
    if problems:
        raise RuntimeError("tracing: " + "; ".join(problems))
    try:
        from customer360 import otel
    except ImportError as exc:
        raise RuntimeError(
            f"tracing is asked for, but OpenTelemetry is not installed ({exc}): "
            "install customer360[tracing]"
        ) from exc

    global _current
    tracing = otel.Tracing.create(settings, exporter)
    _current = otel.current_trace_context
    return tracing
