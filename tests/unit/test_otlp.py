"""The direct OTLP encoder equals the reference encoder; its exporters send over gRPC and
HTTP/protobuf; adopt()."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as reference
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as OTLPHttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

import otel._otlp
from tests.unit.conftest import HttpTraceReceiver

#: One value of every attribute type the SDK accepts, at the edges of their ranges.
_EVERY_TYPE: Mapping[str, AttributeValue] = {
    "str": "plain",
    "str.empty": "",
    "str.non_ascii": "héllo wörld ✓ 日本語 🚀",
    "bool.true": True,
    "bool.false": False,
    "int.zero": 0,
    "int.negative": -42,
    "int.large": 10**15,
    "int.max": 2**63 - 1,
    "int.min": -(2**63),
    "float": 3.25,
    "float.zero": 0.0,
    "float.tiny": -1e-300,
    "float.inf": math.inf,
    "seq.str": ["a", "ß", ""],
    "seq.bool": [True, False],
    "seq.int": [0, -1, 2**62],
    "seq.float": [1.5, -0.25],
    "seq.empty": [],
}
_REMOTE_TRACE_ID, _REMOTE_SPAN_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """A collector's trace service that keeps every request, or rejects it with ``status``."""

    def __init__(self) -> None:
        self.endpoint = ""
        self.calls = 0
        self.requests: list[ExportTraceServiceRequest] = []
        self.status: grpc.StatusCode | None = None

    def Export(
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        self.calls += 1
        if self.status is not None:
            context.abort(self.status, "bad")
        self.requests.append(request)
        return ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[_TraceService]:
    """A real gRPC trace service on a free port of 127.0.0.1."""
    service = _TraceService()
    with ThreadPoolExecutor(max_workers=2) as pool:
        server = grpc.server(pool)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            service, server
        )
        service.endpoint = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        server.start()
        try:
            yield service
        finally:
            server.stop(None).wait()


def _provider(
    exporter: InMemorySpanExporter, resource: Resource, limits: SpanLimits | None = None
) -> TracerProvider:
    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _finished(attributes: Sequence[Mapping[str, AttributeValue]]) -> tuple[ReadableSpan, ...]:
    """One ended span per attribute map, in order, from one provider and tracer."""
    exporter = InMemorySpanExporter()
    tracer = _provider(exporter, Resource({"service.name": "cache-test"})).get_tracer("t")
    for n, span_attributes in enumerate(attributes):
        tracer.start_span(f"s{n}", attributes=span_attributes).end()
    return exporter.get_finished_spans()


def _decoded(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    decoded = ExportTraceServiceRequest()
    decoded.ParseFromString(otel._otlp.encode_spans(spans))
    return decoded


@pytest.fixture(scope="module")
def rich_spans() -> tuple[ReadableSpan, ...]:
    """Spans of two resources and four scopes covering every field the encoder writes."""
    exporter = InMemorySpanExporter()
    main = _provider(exporter, Resource(
        {"service.name": "checkout", "service.version": "1.2.3", "host.cores": 8,
         "ratio": 0.5, "tags": ("a", "b")},
        schema_url="https://opentelemetry.io/schemas/1.21.0",
    ))
    limited = _provider(exporter, Resource({"service.name": "worker"}), SpanLimits(
        max_span_attributes=2, max_events=1, max_links=1,
        max_event_attributes=1, max_link_attributes=1,
    ))
    plain = main.get_tracer("app.plain")
    versioned = main.get_tracer(
        "app.versioned", "2.0.1", schema_url="https://opentelemetry.io/schemas/1.24.0",
        attributes={"scope.flag": True, "scope.n": 3},
    )
    kinds = main.get_tracer("app.kinds", "0.1")

    root = plain.start_span("every-type", kind=SpanKind.SERVER, attributes=_EVERY_TYPE)
    root.set_status(Status(StatusCode.OK))
    child = plain.start_span("child", context=trace.set_span_in_context(root))
    child.add_event("cache.miss", {"cache.key": "user:1", "attempt": 2, "ratios": [0.5]})
    child.add_event("retry")
    child.set_status(Status(StatusCode.ERROR, "boom"))
    child.end()
    root.end()
    for kind in SpanKind:
        kinds.start_span(f"kind-{kind.name.lower()}", kind=kind).end()

    remote_parent = SpanContext(
        _REMOTE_TRACE_ID, _REMOTE_SPAN_ID, is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("congo", "t61rcWkgMzE"), ("rojo", "00f067aa0ba902b7")]),
    )
    remote_link = SpanContext(0x1234, 0x5678, is_remote=True)
    versioned.start_span(
        "remote-child", kind=SpanKind.CONSUMER,
        context=trace.set_span_in_context(NonRecordingSpan(remote_parent)),
        links=[Link(root.get_span_context(), {"link.reason": "retry", "link.n": 2}),
               Link(remote_link)],
    ).end()

    over = limited.get_tracer("worker.limits").start_span(
        "over-limits", attributes={"a": 1, "b": 2, "c": 3, "d": 4},
        links=[Link(remote_link), Link(root.get_span_context(), {"x": 1, "y": 2})],
    )
    over.add_event("e1")
    over.add_event("e2")
    over.add_event("e3", {"p": 1, "q": 2, "r": 3})  # the limits keep the last event and link
    over.end()
    spans = exporter.get_finished_spans()
    main.shutdown()
    limited.shutdown()
    return spans


def test_rich_batch_decodes_to_the_reference_encoders_request(
    rich_spans: tuple[ReadableSpan, ...],
) -> None:
    """Every attribute type, kind, status, event, link, parent and limit encodes as the SDK's."""
    expected = reference(rich_spans)
    assert _decoded(rich_spans) == expected
    assert [[(s.scope.name, len(s.spans)) for s in r.scope_spans]
            for r in expected.resource_spans] == [
        [("app.plain", 2), ("app.kinds", 5), ("app.versioned", 1)], [("worker.limits", 1)],
    ]
    (over,) = expected.resource_spans[1].scope_spans[0].spans
    assert (over.dropped_attributes_count, over.dropped_events_count, over.dropped_links_count,
            over.events[0].dropped_attributes_count, over.links[0].dropped_attributes_count) == (
        2, 2, 1, 2, 1,
    )


def test_empty_batch_decodes_to_the_reference_encoders_empty_request() -> None:
    """No spans encode to the empty request, as the reference encodes them."""
    assert otel._otlp.encode_spans([]) == b""
    assert _decoded([]) == reference([]) == ExportTraceServiceRequest()


def test_integer_outside_int64_is_left_out_and_logged_as_the_reference_leaves_it_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An int beyond int64, alone or in a sequence, is skipped with an ERROR log; the rest stays."""
    spans = _finished([{"before": "kept", "too.big": 2**70, "too.small": -(2**63) - 1,
                        "seq.too.big": [1, 2**70], "after": 7}])
    with caplog.at_level(logging.ERROR, logger="otel._otlp"):
        decoded = _decoded(spans)
    assert decoded == reference(spans)
    (span,) = decoded.resource_spans[0].scope_spans[0].spans
    assert [a.key for a in span.attributes] == ["before", "after"]
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "otel._otlp"] == [
        (logging.ERROR, f"Failed to encode key too.big: integer {2**70} does not fit in int64"),
        (logging.ERROR,
         f"Failed to encode key too.small: integer {-(2**63) - 1} does not fit in int64"),
        (logging.ERROR, f"Failed to encode key seq.too.big: integer {2**70} does not fit in int64"),
    ]


def test_cached_attributes_keep_their_type_and_message() -> None:
    """Equal values of different types, and one value on spans, events, links, scopes and
    resources, each decode as their own type in their own place."""
    exporter = InMemorySpanExporter()
    provider = _provider(exporter, Resource({"cache.k": 1}))
    tracer = provider.get_tracer("cache", attributes={"cache.k": True})
    first = tracer.start_span("int", attributes={"cache.k": 1})
    first.add_event("event", {"cache.k": 1})
    first.end()
    for value in (True, 1.0, "1"):
        tracer.start_span(type(value).__name__, attributes={"cache.k": value}).end()
    tracer.start_span("link", links=[Link(first.get_span_context(), {"cache.k": 1.0})]).end()
    spans = exporter.get_finished_spans()
    decoded = _decoded(spans)
    assert decoded == reference(spans)
    (resource_spans,) = decoded.resource_spans
    (scope_spans,) = resource_spans.scope_spans
    assert [s.attributes[0].value.WhichOneof("value") for s in scope_spans.spans[:4]] == [
        "int_value", "bool_value", "double_value", "string_value",
    ]
    assert (resource_spans.resource.attributes[0].value.WhichOneof("value"),
            scope_spans.scope.attributes[0].value.WhichOneof("value"),
            scope_spans.spans[0].events[0].attributes[0].value.WhichOneof("value"),
            scope_spans.spans[4].links[0].attributes[0].value.WhichOneof("value")) == (
        "int_value", "bool_value", "int_value", "double_value",
    )


def test_negative_zero_keeps_its_sign_after_positive_zero_was_cached() -> None:
    """A float -0.0 after a 0.0 under the same key encodes as -0.0, as the reference does."""
    spans = _finished([{"zero.sign": 0.0}, {"zero.sign": -0.0}])
    decoded = _decoded(spans)
    signs = [math.copysign(1.0, s.attributes[0].value.double_value)
             for s in decoded.resource_spans[0].scope_spans[0].spans]
    assert signs == [1.0, -1.0]
    assert decoded == reference(spans)


def test_span_exporter_sends_the_reference_request_over_grpc(
    collector: _TraceService, rich_spans: tuple[ReadableSpan, ...],
) -> None:
    """SpanExporter.export delivers exactly the reference encoder's request to a gRPC server."""
    exporter = otel._otlp.SpanExporter(endpoint=collector.endpoint, insecure=True)
    try:
        assert exporter.export(rich_spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert collector.requests == [reference(rich_spans)]


def test_span_exporter_fails_once_when_the_server_rejects_the_request(
    collector: _TraceService, rich_spans: tuple[ReadableSpan, ...],
) -> None:
    """A non-retryable INVALID_ARGUMENT answer makes export return FAILURE after one call."""
    collector.status = grpc.StatusCode.INVALID_ARGUMENT
    exporter = otel._otlp.SpanExporter(endpoint=collector.endpoint, insecure=True)
    try:
        assert exporter.export(rich_spans) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert (collector.calls, collector.requests) == (1, [])


def test_http_span_exporter_posts_the_reference_request(
    http_traces: HttpTraceReceiver, rich_spans: tuple[ReadableSpan, ...],
) -> None:
    """HttpSpanExporter.export POSTs exactly the reference encoder's request as protobuf."""
    exporter = otel._otlp.HttpSpanExporter(endpoint=http_traces.endpoint)
    try:
        assert exporter.export(rich_spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert http_traces.calls == [("/v1/traces", "application/x-protobuf")]
    assert http_traces.requests == [reference(rich_spans)]


def test_http_span_exporter_fails_once_when_the_server_rejects_the_request(
    http_traces: HttpTraceReceiver, rich_spans: tuple[ReadableSpan, ...],
) -> None:
    """A non-retryable 400 answer makes export return FAILURE after one request."""
    http_traces.status = 400
    exporter = otel._otlp.HttpSpanExporter(endpoint=http_traces.endpoint)
    try:
        assert exporter.export(rich_spans) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert len(http_traces.calls) == 1


def test_http_span_exporter_drops_a_batch_over_max_request_size_unsent(
    http_traces: HttpTraceReceiver, rich_spans: tuple[ReadableSpan, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request larger than max_request_size is not sent, is a FAILURE and is logged; after
    shutdown export refuses every batch."""
    size = len(otel._otlp.encode_spans(rich_spans))
    exporter = otel._otlp.HttpSpanExporter(endpoint=http_traces.endpoint,
                                           max_request_size=size - 1)
    with caplog.at_level(logging.WARNING, logger="otel._otlp"):
        assert exporter.export(rich_spans) is SpanExportResult.FAILURE
        exporter.shutdown()
        assert exporter.export(rich_spans[:1]) is SpanExportResult.FAILURE
    assert http_traces.calls == []
    assert [r.getMessage() for r in caplog.records if r.name == "otel._otlp"] == [
        f"Dropping span batch: serialized size {size} bytes exceeds max_request_size "
        f"{size - 1} bytes.",
        "Exporter already shutdown, ignoring batch",
    ]


def test_adopt_swaps_the_reference_grpc_and_http_exporters_once_and_nothing_else(
    collector: _TraceService, http_traces: HttpTraceReceiver,
) -> None:
    """adopt() replaces the SDK's gRPC and HTTP exporters and their batch processors, once;
    others stay."""
    in_memory = InMemorySpanExporter()
    grpc_processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.endpoint,
                                                         insecure=True))
    http_processor = BatchSpanProcessor(OTLPHttpSpanExporter(endpoint=http_traces.endpoint))
    memory_processor = BatchSpanProcessor(in_memory)
    provider = TracerProvider()
    for processor in (grpc_processor, http_processor, memory_processor):
        provider.add_span_processor(processor)
    try:
        assert otel._otlp.adopt(provider) == 2
        assert type(grpc_processor.span_exporter) is otel._otlp.SpanExporter
        assert type(http_processor.span_exporter) is otel._otlp.HttpSpanExporter
        assert type(grpc_processor) is type(http_processor) is (
            otel._otlp.EncodingBatchSpanProcessor)
        assert memory_processor.span_exporter is in_memory
        assert type(memory_processor) is BatchSpanProcessor
        assert otel._otlp.adopt(provider) == 0
    finally:
        provider.shutdown()


def test_adopted_exporter_sends_to_the_endpoint_of_the_exporter_it_replaced(
    collector: _TraceService,
) -> None:
    """After adopt(), a span ended on the provider reaches the replaced exporter's endpoint."""
    in_memory = InMemorySpanExporter()
    grpc_processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.endpoint,
                                                         insecure=True))
    provider = TracerProvider()
    provider.add_span_processor(grpc_processor)
    provider.add_span_processor(SimpleSpanProcessor(in_memory))
    try:
        assert otel._otlp.adopt(provider) == 1
        adopted = grpc_processor.span_exporter
        assert isinstance(adopted, otel._otlp.SpanExporter)
        # Checked before any span exists, so a wrong endpoint receives nothing from this test.
        assert adopted._endpoint == collector.endpoint
        provider.get_tracer("adopted").start_span("after-adopt").end()
        assert provider.force_flush()
    finally:
        provider.shutdown()
    assert collector.requests == [reference(in_memory.get_finished_spans())]


def test_adopted_http_exporter_posts_to_the_endpoint_of_the_exporter_it_replaced(
    http_traces: HttpTraceReceiver,
) -> None:
    """After adopt(), a span ended on the provider reaches the replaced HTTP exporter's URL,
    encoded as it ended."""
    in_memory = InMemorySpanExporter()
    http_processor = BatchSpanProcessor(OTLPHttpSpanExporter(endpoint=http_traces.endpoint))
    provider = TracerProvider()
    provider.add_span_processor(http_processor)
    provider.add_span_processor(SimpleSpanProcessor(in_memory))
    try:
        assert otel._otlp.adopt(provider) == 1
        provider.get_tracer("adopted").start_span("after-adopt", attributes=_EVERY_TYPE).end()
        assert provider.force_flush()
    finally:
        provider.shutdown()
    assert http_traces.requests == [reference(in_memory.get_finished_spans())]


def _encoding_provider(collector: _TraceService, sampler: Sampler = ALWAYS_ON,
                       ) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider whose spans go through the encoding processor and, as ended, into memory."""
    in_memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, resource=Resource({"service.name": "enc"}))
    provider.add_span_processor(otel._otlp.EncodingBatchSpanProcessor(
        otel._otlp.SpanExporter(endpoint=collector.endpoint, insecure=True)))
    provider.add_span_processor(SimpleSpanProcessor(in_memory))
    return provider, in_memory


def test_encoding_processor_delivers_the_reference_request(collector: _TraceService) -> None:
    """Spans encoded as they end reach the server as the reference encoder's one request."""
    provider, in_memory = _encoding_provider(collector)
    try:
        plain, versioned = provider.get_tracer("enc.a"), provider.get_tracer("enc.b", "1.0")
        root = plain.start_span("root", kind=SpanKind.SERVER, attributes=_EVERY_TYPE)
        child = versioned.start_span("child", context=trace.set_span_in_context(root),
                                     links=[Link(root.get_span_context(), {"n": 1})])
        child.add_event("retry", {"attempt": 2})
        child.set_status(Status(StatusCode.ERROR, "boom"))
        child.end()
        root.end()
        plain.start_span("last", kind=SpanKind.CLIENT).end()
        assert provider.force_flush()
    finally:
        provider.shutdown()
    assert collector.requests == [reference(in_memory.get_finished_spans())]


def test_encoding_processor_queues_no_unsampled_span(collector: _TraceService) -> None:
    """A span the sampler did not sample is never encoded or sent."""
    provider, in_memory = _encoding_provider(collector, ALWAYS_OFF)
    try:
        provider.get_tracer("enc").start_span("dropped").end()
        assert provider.force_flush()
    finally:
        provider.shutdown()
    assert (collector.calls, in_memory.get_finished_spans()) == (0, ())


def test_a_span_the_processor_cannot_encode_never_raises_into_end(
    collector: _TraceService, caplog: pytest.LogCaptureFixture,
) -> None:
    """on_end queues an unencodable span as it is; the exporter drops it (one warning) and
    the batches still go out."""
    provider, _ = _encoding_provider(collector)
    processor = provider._active_span_processor._span_processors[0]
    context = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    broken = ReadableSpan("broken", context, start_time=1, end_time=2**64)  # not a fixed64
    try:
        processor.on_end(broken)
        assert processor.force_flush()  # the batch went out without the span
        provider.get_tracer("enc").start_span("after").end()
        assert provider.force_flush()
    finally:
        provider.shutdown()
    assert "otel.otlp: encoding a span (dropped from its batch) failed" in caplog.text
    assert "Exception while exporting Span" not in caplog.text
    assert [s.name for r in collector.requests for rs in r.resource_spans
            for ss in rs.scope_spans for s in ss.spans] == ["after"]


def test_encoding_processor_needs_the_librarys_exporter() -> None:
    """Any other exporter is refused at construction, with the type in the message."""
    with pytest.raises(TypeError, match="HttpSpanExporter, not InMemorySpanExporter"):
        otel._otlp.EncodingBatchSpanProcessor(InMemorySpanExporter())  # type: ignore[arg-type]
