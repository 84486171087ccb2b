"""When tracing is on (the standard OTEL_* environment), and what it never exports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from customer360.otel import WITHHELD, Tracing
from customer360.settings import Settings
from customer360.tracing import configure

OTEL = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, []),  # off by default
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": ""}, []),  # compose's `${VAR:-}`
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        # an endpoint for the other signals, traces declined
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_tracing_is_on_only_when_the_standard_environment_asks(
    env: pytest.MonkeyPatch, variables: dict[str, str], expected: list[str]
) -> None:
    for name, value in variables.items():
        env.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.trace_exporters == expected
    assert (configure(settings) is None) == (expected == [])


def test_what_cannot_work_refuses_the_start_instead_of_losing_spans(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    # the exporter is not shipped; the protocol does not matter to an exporter not OTLP
    assert s.tracing_problems() == [
        "OTEL_TRACES_EXPORTER 'zipkin' is not available (otlp, console or none)"
    ]
    env.setenv("OTEL_TRACES_EXPORTER", "otlp,zipkin")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert len(s.tracing_problems()) == 2
    with pytest.raises(RuntimeError, match="zipkin"):
        configure(s)
    # and `c360 serve` says so before starting, as for every production problem
    production = s.model_copy(update={"env": "production"}).production_problems()
    assert all(p in production for p in s.tracing_problems())


def test_off_the_gateway_loads_and_installs_nothing_of_tracing(env: pytest.MonkeyPatch) -> None:
    # a fresh process: what the suite imported says nothing about what the gateway needs.
    # (redis-py looks for OpenTelemetry's metrics on import, for its own opt-in metrics.)
    script = textwrap.dedent(
        """
        import sys
        from customer360.app import create_app
        from customer360.settings import Settings
        app = create_app(Settings(
            _env_file=None,
            database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
            redis_url="redis://127.0.0.1:1/0",
        ))
        tracing = ("customer360.otel", "opentelemetry.sdk.trace", "opentelemetry.instrumentation",
                   "opentelemetry.exporter")
        print(sorted(m for m in sys.modules if m.startswith(tracing)))
        print([m.cls.__name__ for m in app.user_middleware])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded, middleware = out.stdout.strip().splitlines()[-2:]
    assert loaded == "[]"
    assert "OpenTelemetry" not in middleware


def test_exception_messages_and_error_descriptions_never_leave_the_process(
    env: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    tracing = configure(Settings(_env_file=None), exporter=exporter)  # type: ignore[call-arg]
    assert isinstance(tracing, Tracing)

    def fail() -> None:
        raise ValueError("invalid input for query argument $1: 'ann@example.com'")

    with (
        pytest.raises(ValueError),
        tracing.tracer.start_as_current_span("write") as span,
    ):
        span.set_status(StatusCode.ERROR, "ann@example.com is taken")
        fail()
    (exported,) = exporter.get_finished_spans()
    assert exported.status.status_code is StatusCode.ERROR
    assert exported.status.description is None
    (event,) = exported.events
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == WITHHELD
    assert "in fail" in str(attributes["exception.stacktrace"])  # the frames stay
    assert "example.com" not in repr(attributes)


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, Any, bytes]]]]:
    """An OTLP/HTTP collector on loopback: (its URL, what it received)."""
    received: list[tuple[str, Any, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


async def test_the_standard_environment_alone_sends_spans_to_an_otlp_collector(
    env: pytest.MonkeyPatch, collector: tuple[str, list[tuple[str, Any, bytes]]]
) -> None:
    url, received = collector
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken")
    env.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    tracing = configure(Settings(_env_file=None))  # type: ignore[call-arg]
    assert tracing is not None
    with tracing.tracer.start_as_current_span("work"):
        pass
    await tracing.shutdown()  # what the gateway's lifespan does on the way out: flushed
    ((path, headers, body),) = received
    assert path == "/v1/traces" and headers["Authorization"] == "Bearer t0ken"
    (batch,) = ExportTraceServiceRequest.FromString(body).resource_spans
    resource = {a.key: a.value.string_value for a in batch.resource.attributes}
    assert resource["service.name"] == "customer360"  # OTEL_SERVICE_NAME's default here
    assert resource["deployment.environment"] == "test"
    assert [span.name for scope in batch.scope_spans for span in scope.spans] == ["work"]

    env.setenv("OTEL_SERVICE_NAME", "c360-eu")
    named = configure(Settings(_env_file=None))  # type: ignore[call-arg]
    assert named is not None
    assert named.provider.resource.attributes["service.name"] == "c360-eu"
    await named.shutdown()
