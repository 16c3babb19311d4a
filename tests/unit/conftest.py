"""Fixtures of the unit tests: isolated OpenTelemetry globals and root logger per test.

OpenTelemetry lets a process set its global providers once. Tests of ``otel.configure()`` need a
fresh process state each, so ``fresh_otel`` puts the API's globals back to "never set" (as the
``opentelemetry-test-utils`` package does for the project's own tests) and restores the root
logger, the environment and ``otel._setup``'s state afterwards. Exporters are the SDK's
in-memory ones, or real OTLP servers on loopback (``http_traces``; ``test_otlp`` has gRPC's).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import trace
from opentelemetry._logs import _internal as logs_internal
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.util._once import Once

import otel._distro
import otel._instruments
import otel._setup


def _reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
    logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()
    logs_internal._LOGGER_PROVIDER = None
    logs_internal._PROXY_LOGGER_PROVIDER = logs_internal.ProxyLoggerProvider()
    otel._instruments._cached = None
    otel._setup._active = None
    otel._setup._owned_providers.clear()
    otel._distro._selected = False


@pytest.fixture
def stable_http_conventions(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SEMCONV_STABILITY_OPT_IN=http (the services' setting), read afresh by instrument()."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    monkeypatch.setattr(_OpenTelemetrySemanticConventionStability, "_initialized", False)
    monkeypatch.setattr(_OpenTelemetrySemanticConventionStability,
                        "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})


@pytest.fixture
def fresh_otel() -> Iterator[None]:
    """Fresh OpenTelemetry globals, root logger and environment for one test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    environ = dict(os.environ)
    _reset_globals()
    try:
        yield
    finally:
        active = otel._setup._active
        if active is not None:
            active.shutdown()
        root.handlers[:] = handlers
        root.setLevel(level)
        os.environ.clear()
        os.environ.update(environ)
        _reset_globals()


@dataclass
class HttpTraceReceiver:
    """What an OTLP/HTTP trace endpoint received; it answers ``status`` (200: success)."""

    endpoint: str = ""
    status: int = 200
    calls: list[tuple[str, str]] = field(default_factory=list)  # (path, content type)
    authorizations: list[str] = field(default_factory=list)  # each call's Authorization
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)


@pytest.fixture
def http_traces() -> Iterator[HttpTraceReceiver]:
    """A real OTLP/HTTP trace endpoint (``/v1/traces``) on a free port of 127.0.0.1."""
    receiver = HttpTraceReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.calls.append((self.path, self.headers.get("Content-Type", "")))
            receiver.authorizations.append(self.headers.get("Authorization", ""))
            if receiver.status == 200:
                receiver.requests.append(ExportTraceServiceRequest.FromString(body))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(receiver.status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            """Keep the test output clean."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
