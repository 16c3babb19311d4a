"""otel.configure() in standalone mode and under an already installed SDK (instrumented mode)."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from opentelemetry import _logs, metrics, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    InMemoryMetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import DEFAULT_ON

import otel
import otel._otlp
from otel._logging import OtlpLoggingHandler
from tests.unit.conftest import HttpTraceReceiver

HOUR_MS = 3_600_000
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _quiet(**kwargs: object) -> otel.Telemetry:
    """configure() in standalone mode without network exporters or library instrumentation."""
    defaults: dict[str, object] = {
        "traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none",
        "instrumentations": (), "log_stream": io.StringIO(),
    }
    defaults.update(kwargs)
    return otel.configure(**defaults)  # type: ignore[arg-type]


def test_standalone_installs_sdk_providers_with_the_conventional_resource(fresh_otel: None) -> None:
    """Standalone configure() makes its three SDK providers global, with service.name, version,
    a uuid4 instance id, deployment.environment=LOCAL and no service.namespace."""
    telemetry = _quiet(service_name="gateway", service_version="1.4.0")
    assert telemetry.mode == "standalone"
    assert trace.get_tracer_provider() is telemetry.tracer_provider
    assert metrics.get_meter_provider() is telemetry.meter_provider
    assert _logs.get_logger_provider() is telemetry.logger_provider
    attrs = dict(telemetry.resource.attributes)
    assert (attrs["service.name"], attrs["service.version"]) == ("gateway", "1.4.0")
    assert _UUID4.fullmatch(str(attrs["service.instance.id"]))
    assert attrs["deployment.environment"] == "LOCAL"
    assert "service.namespace" not in attrs
    assert telemetry.tracer_provider.sampler is DEFAULT_ON


def test_standalone_environment_comes_from_soma_agent_mode(
    fresh_otel: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SOMA_AGENT_MODE sets deployment.environment; OTEL_RESOURCE_ATTRIBUTES adds attributes."""
    monkeypatch.setenv("SOMA_AGENT_MODE", "PROD")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=gw-7,team=core")
    telemetry = _quiet(service_name="gateway")
    attrs = dict(telemetry.resource.attributes)
    assert (attrs["deployment.environment"], attrs["service.instance.id"], attrs["team"]) == (
        "PROD", "gw-7", "core",
    )


def test_standalone_sets_semconv_opt_in_only_when_unset(
    fresh_otel: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_SEMCONV_STABILITY_OPT_IN defaults to http in standalone mode; a set value is kept."""
    import os

    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    _quiet(service_name="gateway").shutdown()
    assert os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http"


def test_standalone_keeps_an_explicit_semconv_opt_in(
    fresh_otel: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's OTEL_SEMCONV_STABILITY_OPT_IN value is not overwritten."""
    import os

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    _quiet(service_name="gateway")
    assert os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http/dup"


def test_shutdown_flushes_traces_metrics_and_logs(fresh_otel: None) -> None:
    """Data held by batch processors and a periodic reader with hour-long delays is exported
    by shutdown(), for all three signals."""
    spans, logs, metric_out = InMemorySpanExporter(), InMemoryLogRecordExporter(), io.StringIO()
    telemetry = _quiet(
        service_name="gateway",
        additional_span_processors=[BatchSpanProcessor(spans, schedule_delay_millis=HOUR_MS)],
        additional_log_processors=[BatchLogRecordProcessor(logs, schedule_delay_millis=HOUR_MS)],
        additional_metric_readers=[PeriodicExportingMetricReader(
            ConsoleMetricExporter(out=metric_out), export_interval_millis=HOUR_MS)],
    )
    with otel.conversation_process():
        logging.getLogger("svc").warning("processing")
    metrics.get_meter("svc").create_counter("sessions_created_total").add(3)
    assert (spans.get_finished_spans(), logs.get_finished_logs(), metric_out.getvalue()) == (
        (), (), "",
    )
    telemetry.shutdown()
    assert [s.name for s in spans.get_finished_spans()] == ["conversation.process"]
    assert [r.log_record.body for r in logs.get_finished_logs()] == ["processing"]
    exported = json.loads(metric_out.getvalue())
    points = [
        p["value"]
        for rm in exported["resource_metrics"]
        for sm in rm["scope_metrics"]
        for m in sm["metrics"] if m["name"] == "sessions_created_total"
        for p in m["data"]["data_points"]
    ]
    assert points == [3]


def test_http_protobuf_protocol_sends_spans_through_the_librarys_http_exporter(
    fresh_otel: None, http_traces: HttpTraceReceiver,
) -> None:
    """protocol="http/protobuf" exports spans with otel._otlp.HttpSpanExporter behind the
    encoding processor to {endpoint}/v1/traces: the reference encoder's request arrives."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    ended = InMemorySpanExporter()
    telemetry = _quiet(service_name="gateway", traces_exporter="otlp", protocol="http/protobuf",
                       endpoint=http_traces.endpoint.removesuffix("/v1/traces"),
                       additional_span_processors=[SimpleSpanProcessor(ended)])
    (processor,) = [p for p in telemetry.tracer_provider._active_span_processor._span_processors
                    if isinstance(p, otel._otlp.EncodingBatchSpanProcessor)]
    assert type(processor.span_exporter) is otel._otlp.HttpSpanExporter
    with otel.conversation_process():
        pass
    telemetry.shutdown()
    assert http_traces.requests == [encode_spans(ended.get_finished_spans())]


def test_signal_headers_win_over_the_generic_headers(
    fresh_otel: None, http_traces: HttpTraceReceiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With OTEL_EXPORTER_OTLP_TRACES_HEADERS and OTEL_EXPORTER_OTLP_HEADERS both set, spans go
    out with the traces variable's headers, as the OpenTelemetry specification says."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20generic")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer%20traces")
    telemetry = _quiet(service_name="gateway", traces_exporter="otlp", protocol="http/protobuf",
                       endpoint=http_traces.endpoint.removesuffix("/v1/traces"))
    with otel.conversation_process():
        pass
    telemetry.shutdown()
    assert http_traces.authorizations == ["Bearer traces"]


def test_shutdown_is_idempotent_and_detaches_handlers(fresh_otel: None) -> None:
    """A second shutdown() does nothing; the root logger loses configure()'s handlers."""
    root = logging.getLogger()
    before = list(root.handlers)
    telemetry = _quiet(service_name="gateway")
    added = [h for h in root.handlers if h not in before]
    assert [type(h) for h in added] == [logging.StreamHandler, OtlpLoggingHandler]
    telemetry.shutdown()
    telemetry.shutdown()
    assert root.handlers == before


def test_json_lines_go_to_the_given_stream_with_service_name(fresh_otel: None) -> None:
    """Standalone logging writes one JSON line per record with service.name and trace ids."""
    stream = io.StringIO()
    _quiet(service_name="gateway", log_stream=stream)
    with otel.conversation_process() as span:
        logging.getLogger("svc").info("hello", extra={"tenant": "acme"})
    line = json.loads(stream.getvalue())
    assert (line["service.name"], line["tenant"], line["message"]) == ("gateway", "acme", "hello")
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"


def test_bad_environment_value_stops_configure_naming_the_variable(
    fresh_otel: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed OTEL_* variable makes configure() raise before installing anything."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(otel.ConfigurationError, match=r"^OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
        otel.configure(service_name="gateway")
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_second_configure_without_shutdown_is_refused(fresh_otel: None) -> None:
    """Calling configure() twice raises instead of stacking a second setup."""
    _quiet(service_name="gateway")
    with pytest.raises(RuntimeError, match="already called"):
        _quiet(service_name="gateway")


def test_standalone_instruments_libraries_and_shutdown_removes_them(fresh_otel: None) -> None:
    """The named instrumentations are applied once and removed again by shutdown()."""
    instrumentor = HTTPXClientInstrumentor()
    assert instrumentor.is_instrumented_by_opentelemetry is False
    telemetry = _quiet(service_name="gateway", instrumentations=["httpx"])
    assert (telemetry.instrumented, instrumentor.is_instrumented_by_opentelemetry) == (
        ("httpx",), True,
    )
    telemetry.shutdown()
    assert instrumentor.is_instrumented_by_opentelemetry is False


def test_standalone_aiokafka_gets_the_lean_send_and_shutdown_restores_the_original(
    fresh_otel: None,
) -> None:
    """aiokafka is instrumented by the contrib with the library's send in place of the
    contrib's; shutdown() leaves AIOKafkaProducer.send as it was before configure()."""
    from aiokafka import AIOKafkaProducer

    original = AIOKafkaProducer.__dict__["send"]
    telemetry = _quiet(service_name="gateway", instrumentations=["aiokafka"])
    lean = AIOKafkaProducer.__dict__["send"]
    assert telemetry.instrumented == ("aiokafka",)
    assert lean.__code__.co_filename.endswith("otel/_aiokafka.py")
    assert lean.__wrapped__ is original
    telemetry.shutdown()
    assert AIOKafkaProducer.__dict__["send"] is original


def test_unknown_instrumentation_name_is_an_error(fresh_otel: None) -> None:
    """Asking for a library the library does not know raises ConfigurationError."""
    with pytest.raises(otel.ConfigurationError, match="unknown instrumentations"):
        _quiet(service_name="gateway", instrumentations=["kafka-python"])


# ------------------------------------------------------------------------ instrumented mode


class Distro:
    """What opentelemetry-instrument leaves behind: SDK providers (real, with in-memory
    exporters registered first), the logging instrumentation's OTLP handler, httpx instrumented."""

    def __init__(self, resource: Resource) -> None:
        self.spans = InMemorySpanExporter()
        self.logs = InMemoryLogRecordExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        trace.set_tracer_provider(self.tracer_provider)
        metrics.set_meter_provider(self.meter_provider)
        _logs.set_logger_provider(self.logger_provider)
        LoggingInstrumentor().instrument()
        HTTPXClientInstrumentor().instrument()

    def close(self) -> None:
        HTTPXClientInstrumentor().uninstrument()
        LoggingInstrumentor().uninstrument()
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def distro(fresh_otel: None) -> Iterator[Distro]:
    d = Distro(Resource.create({
        "service.name": "gateway", "service.version": "2.0.0",
        "service.instance.id": "gw-1", "deployment.environment": "LOCAL",
    }))
    yield d
    d.close()


def _otlp_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, LoggingHandler)]


def test_instrumented_mode_adopts_the_providers_without_adding_any(distro: Distro) -> None:
    """Under an installed SDK, configure() reuses the three providers and the distro's OTLP
    log handler, instruments nothing, and takes service.name from the resource."""
    handlers_before = _otlp_handlers()
    telemetry = otel.configure(log_stream=io.StringIO())
    assert telemetry.mode == "instrumented"
    assert (telemetry.tracer_provider, telemetry.meter_provider, telemetry.logger_provider) == (
        distro.tracer_provider, distro.meter_provider, distro.logger_provider,
    )
    assert trace.get_tracer_provider() is distro.tracer_provider
    assert _otlp_handlers() == handlers_before and len(handlers_before) == 1
    assert telemetry.instrumented == ()
    assert telemetry.settings.service_name == "gateway"
    assert telemetry.resource.attributes["service.version"] == "2.0.0"


def test_instrumented_mode_scrubs_spans_exported_by_the_earlier_processor(
    distro: Distro,
) -> None:
    """The distro's synchronous exporter, registered before configure(), gets redacted spans."""
    otel.configure(log_stream=io.StringIO())
    with trace.get_tracer("t").start_as_current_span("login") as span:
        span.set_attribute("http.request.header.cookie", ("sid=1",))
    (finished,) = distro.spans.get_finished_spans()
    assert dict(finished.attributes or {}) == {"http.request.header.cookie": otel.REDACTED}


def test_instrumented_mode_logs_once_over_otlp_scrubbed_with_trace_context(
    distro: Distro,
) -> None:
    """Each record reaches the distro's LoggerProvider exactly once, scrubbed, with the span's
    trace context, and the JSON line on stdout carries the same trace id."""
    stream = io.StringIO()
    otel.configure(log_stream=stream)
    with otel.execute_tool("search") as span:
        logging.getLogger("svc").info("calling", extra={"api_key": "k-1", "q": "x"})
    (record,) = [r for r in distro.logs.get_finished_logs()
                 if r.instrumentation_scope is not None and r.instrumentation_scope.name == "svc"]
    ctx = span.get_span_context()
    assert (record.log_record.trace_id, record.log_record.span_id) == (ctx.trace_id, ctx.span_id)
    assert dict(record.log_record.attributes or {}) == {"api_key": otel.REDACTED, "q": "x"}
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines()
               if json.loads(x)["logger"] == "svc"]
    assert (line["trace_id"], line["api_key"]) == (f"{ctx.trace_id:032x}", otel.REDACTED)


def test_instrumented_shutdown_flushes_and_leaves_the_providers_working(distro: Distro) -> None:
    """shutdown() in instrumented mode detaches the library's parts but does not shut down the
    distro's providers, which keep exporting."""
    telemetry = otel.configure(log_stream=io.StringIO())
    (otlp_handler,) = _otlp_handlers()
    assert len(otlp_handler.filters) == 1
    telemetry.shutdown()
    assert otlp_handler.filters == []
    with trace.get_tracer("t").start_as_current_span("after"):
        pass
    assert [s.name for s in distro.spans.get_finished_spans()] == ["after"]


def test_instrumented_mode_warns_about_missing_resource_attributes(
    fresh_otel: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A distro resource without version, instance id and environment is reported, by name."""
    d = Distro(Resource({"service.name": "gateway"}))
    try:
        with caplog.at_level(logging.WARNING, logger="otel"):
            otel.configure(log_stream=io.StringIO())
        missing = sorted(
            r.args[0] for r in caplog.records  # type: ignore[index]
            if r.name == "otel" and r.msg.startswith("resource attribute")
        )
        assert missing == ["deployment.environment", "service.instance.id", "service.version"]
    finally:
        d.close()
