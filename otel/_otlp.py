"""Span export over OTLP (gRPC or HTTP/protobuf) with a direct protobuf encoder.

Why
    The SDK's reference encoder (``opentelemetry.exporter.otlp.proto.common``) builds one
    protobuf object per span, attribute and value, then serializes the tree: about 60 us of CPU
    per span on the benchmark machine, on the exporter thread, which holds the GIL while it
    works and so takes that time from request handling (``docs/benchmarks.md``). This module
    writes the same ``ExportTraceServiceRequest`` straight to protobuf wire bytes, caching the
    parts that repeat in every batch (resource, instrumentation scope, attribute keys).

What is the same
    :class:`SpanExporter` is the SDK's gRPC ``OTLPSpanExporter`` (same constructor, environment
    variables, channel, headers, compression, timeout, retries with backoff, self-metrics) with
    two changes: the request is encoded by :func:`encode_spans`, and the gRPC method sends those
    bytes as they are. :class:`HttpSpanExporter` is the SDK's HTTP/protobuf ``OTLPSpanExporter``
    (same constructor, variables, session, headers, compression, timeout, retries, request size
    limit, self-metrics) whose ``export`` sends :func:`encode_spans`'s bytes.
    ``tests/unit/test_otlp.py`` parses the bytes with the generated protobuf classes and checks
    that they equal the reference encoder's message for spans with every attribute type,
    events, links, status, remote parents and several resources and scopes, and that invalid
    attribute values are skipped as the reference skips them (one difference: see
    :func:`encode_spans` on grouping). :class:`EncodingBatchSpanProcessor` is
    the SDK's ``BatchSpanProcessor`` that encodes each span as it ends (an
    :class:`EncodedSpan`), so the queue holds bytes rather than span objects.

Usage
    :func:`otel.configure` uses the exporter of the configured protocol and the encoding
    processor for traces, in both modes (instrumented mode converts the distro's OTLP span
    exporter and its batch processor in place, see :func:`adopt`).
"""

from __future__ import annotations

import logging
import struct
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as _ReferenceSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._common import _is_request_too_large
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as _ReferenceHttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from otel._sdk import events_and_links, frozen_attributes, telemetry_failed

__all__ = [
    "EncodedSpan",
    "EncodingBatchSpanProcessor",
    "HttpSpanExporter",
    "SpanExporter",
    "adopt",
    "encode_spans",
    "unencodable_spans",
]

_LOG = logging.getLogger(__name__)
#: Spans :func:`encode_spans` dropped because they could not be encoded (this process).
_unencodable = 0


def unencodable_spans() -> int:
    """How many spans :func:`encode_spans` dropped because they could not be encoded."""
    return _unencodable
_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SMALL_VARINTS = tuple(bytes([n]) for n in range(128))
_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_FIXED32 = struct.Struct("<I").pack
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags masks (trace.proto)
#: Fields that take few values, encoded once: kind (field 6), flags (field 16, fixed32) and a
#: status without description (field 15). Kinds and statuses are indexed by the enum value
#: (0..n-1; ``_value_``, since hashing an enum member is a Python-level call).
_KINDS = tuple(b"\x30" + bytes([value + 1]) for value in range(len(SpanKind)))
_BARE_STATUS = tuple(b"\x7a" + (b"\x02\x18" + bytes([value]) if value else b"\x00")
                     for value in range(len(StatusCode)))
_SPAN_FLAGS = {False: b"\x85\x01" + _FIXED32(_HAS_IS_REMOTE),
               True: b"\x85\x01" + _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE)}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag`` (one byte: field number << 3 | 2) and ``payload``."""
    return tag + _varint(len(payload)) + payload


def _value(value: object) -> bytes:
    """An ``AnyValue`` message body; raises for a type OTLP cannot carry."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer {value} does not fit in int64")
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if value is None:
        return b""
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(
            b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        )
    raise TypeError(f"invalid type {type(value).__name__} of value {value!r}")


_KEYS: dict[str, bytes] = {}


def _key_value(key: str, value: object) -> bytes:
    """A ``KeyValue`` message body (the encoded key is cached: keys repeat on every span)."""
    encoded = _KEYS.get(key)
    if encoded is None:
        encoded = _field(b"\x0a", key.encode())
        if len(_KEYS) < 4096:
            _KEYS[key] = encoded
    return encoded + _field(b"\x12", _value(value))


#: (tag, key, type, value) -> encoded KeyValue field, for str/int/bool; most repeat from span
#: to span (method, route, status, addresses). Cleared when full, so a stream of unique values
#: (ports, ids) costs one dictionary insert each and never grows it past the bound.
_PAIRS: dict[tuple[bytes, str, type, object], bytes] = {}
_PAIRS_MAX = 8192


def _attributes(tag: bytes, attributes: Mapping[str, object] | None) -> bytes:
    """Repeated ``KeyValue`` fields; a value that cannot be encoded is logged and skipped."""
    if not attributes:
        return b""
    parts = []
    for key, value in attributes.items():
        kind = type(value)
        # Not floats: -0.0 == 0.0 and NaN != NaN would make the cache wrong or grow.
        scalar = kind is str or kind is int or kind is bool
        encoded = _PAIRS.get((tag, key, kind, value)) if scalar else None
        if encoded is None:
            try:
                encoded = _field(tag, _key_value(key, value))
            except (TypeError, ValueError) as error:
                _LOG.error("Failed to encode key %s: %s", key, error)
                continue
            if scalar:
                if len(_PAIRS) >= _PAIRS_MAX:
                    _PAIRS.clear()
                _PAIRS[(tag, key, kind, value)] = encoded
        parts.append(encoded)
    return b"".join(parts)


def _flags(parent: SpanContext | None) -> bytes:
    if parent is not None and parent.is_remote:
        return _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE)
    return _FIXED32(_HAS_IS_REMOTE)


def _span(span: ReadableSpan) -> bytes:
    """A ``Span`` message body (field numbers from opentelemetry/proto/trace/v1/trace.proto)."""
    context = span.get_span_context()
    assert context is not None
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        trace_state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
        parts.append(_field(b"\x1a", trace_state.encode()))
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_field(b"\x2a", span.name.encode()))
    parts.append(_KINDS[span.kind._value_])
    if span.start_time:
        parts.append(b"\x39" + _FIXED64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _FIXED64(span.end_time))
    parts.append(_attributes(b"\x4a", frozen_attributes(span)))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    events, links = events_and_links(span)
    for event in events:
        body = b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b""
        if event.name:
            body += _field(b"\x12", event.name.encode())
        body += _attributes(b"\x1a", event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_field(b"\x5a", body))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in links:
        body = (
            b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
            + b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
            + _attributes(b"\x22", link.attributes)
        )
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        parts.append(_field(b"\x6a", body + b"\x35" + _flags(link.context)))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    if status.description:
        body = _field(b"\x12", status.description.encode())
        if status.status_code.value:
            body += b"\x18" + _varint(status.status_code.value)
        parts.append(_field(b"\x7a", body))
    else:
        parts.append(_BARE_STATUS[status.status_code._value_])
    parts.append(_SPAN_FLAGS[parent is not None and parent.is_remote])
    return b"".join(parts)


class _Cache:
    """Encoded resources and scopes by identity (both are immutable and few per process)."""

    def __init__(self) -> None:
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[int, tuple[InstrumentationScope | None, tuple[bytes, bytes]]] = {}

    def resource(self, resource: Resource) -> bytes:
        hit = self._resources.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
        encoded = _field(b"\x0a", _attributes(b"\x0a", resource.attributes))
        if len(self._resources) < 64:
            self._resources[id(resource)] = (resource, encoded)
        return encoded

    def scope(self, scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
        """The ``scope`` field and the ``schema_url`` field of a ``ScopeSpans``."""
        hit = self._scopes.get(id(scope))
        if hit is not None and hit[0] is scope:
            return hit[1]
        body = b""
        schema_url = b""
        if scope is not None:
            if scope.name:
                body += _field(b"\x0a", scope.name.encode())
            if scope.version:
                body += _field(b"\x12", scope.version.encode())
            body += _attributes(b"\x1a", scope.attributes)
            if scope.schema_url:
                schema_url = _field(b"\x1a", scope.schema_url.encode())
        encoded = (_field(b"\x0a", body), schema_url)
        if len(self._scopes) < 1024:
            self._scopes[id(scope)] = (scope, encoded)
        return encoded


_CACHE = _Cache()


class EncodedSpan(NamedTuple):
    """A span already written as a ``Span`` message body, with the resource and scope that
    group it (see :class:`EncodingBatchSpanProcessor`)."""

    resource: Resource
    instrumentation_scope: InstrumentationScope | None
    body: bytes


def encode_spans(spans: Sequence[ReadableSpan | EncodedSpan]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` of ``spans``, grouped by resource, then by
    instrumentation scope, in order of first appearance (as the reference encoder groups).
    An :class:`EncodedSpan` is written as it is. An attribute value OTLP cannot carry is
    skipped (and logged) as the reference skips it; a span that cannot be encoded at all (a
    name or status description that is not valid Unicode text, a broken span object) is
    dropped, counted (:func:`unencodable_spans`) and reported once (WARNING on the ``otel``
    logger), and the rest of the batch goes out; the reference encoder fails the whole batch.

    Groups are formed by object identity: the SDK shares one resource per provider and one
    scope object per tracer, so this equals the reference's grouping; two equal but distinct
    resource objects would become two ``ResourceSpans``, which OTLP allows."""
    # Grouped by identity: Resource.__hash__ serializes the attributes to JSON on every call.
    resources: dict[int, Resource] = {}
    grouped: defaultdict[int, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]
    grouped = defaultdict(dict)
    global _unencodable
    for span in spans:
        try:
            resource, scope = span.resource, span.instrumentation_scope or None
            body = span.body if isinstance(span, EncodedSpan) else _span(span)
        except Exception:
            _unencodable += 1
            telemetry_failed("otlp", "encoding a span (dropped from its batch)")
            continue
        resources.setdefault(id(resource), resource)
        scopes = grouped[id(resource)]
        entry = scopes.get(id(scope))
        if entry is None:
            entry = scopes[id(scope)] = (scope, [])
        entry[1].append(body)
    out = []
    for resource_id, scopes in grouped.items():
        resource = resources[resource_id]
        scope_spans = []
        for scope, encoded_spans in scopes.values():
            scope_field, schema_url = _CACHE.scope(scope)
            body = scope_field + b"".join(_field(b"\x12", s) for s in encoded_spans)
            scope_spans.append(_field(b"\x12", body + schema_url))
        body = _CACHE.resource(resource) + b"".join(scope_spans)
        if resource.schema_url:
            body += _field(b"\x1a", resource.schema_url.encode())
        out.append(_field(b"\x0a", body))
    return b"".join(out)


class _RawTraceStub:
    """The trace service's ``Export`` method, sending already serialized requests."""

    def __init__(self, channel: Any) -> None:
        self.Export: Callable[..., Any] = channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class SpanExporter(_ReferenceSpanExporter):
    """The SDK's OTLP/gRPC span exporter, encoding with :func:`encode_spans`."""

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        self._client = _RawTraceStub(self._channel)  # type: ignore[assignment]

    def _translate_data(  # type: ignore[override]
        self, data: Sequence[ReadableSpan | EncodedSpan]
    ) -> bytes:
        return encode_spans(data)


class HttpSpanExporter(_ReferenceHttpSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding with :func:`encode_spans`.

    The SDK's HTTP exporter calls its encoder inside ``export`` (gRPC has the
    ``_translate_data`` step), so ``export`` is the SDK's (1.45.1) with the encoder swapped:
    the same shutdown check, self-metrics, size limit and failure attributes."""

    def export(self, spans: Sequence[ReadableSpan | EncodedSpan]) -> SpanExportResult:
        """Send ``spans`` as one request; FAILURE once shut down or when the request fails."""
        if self._shutdown:
            _LOG.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            data = encode_spans(spans)  # skips (and logs) what OTLP cannot carry; never raises
            if _is_request_too_large(data, self._max_request_size):
                _LOG.warning("Dropping span batch: serialized size %d bytes exceeds "
                             "max_request_size %d bytes.", len(data), self._max_request_size)
                result.error = ValueError(f"request of {len(data)} bytes exceeds "
                                          f"max_request_size {self._max_request_size}")
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                if sent.status_code is not None:
                    result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


#: The library's exporters, which accept :class:`EncodedSpan` items.
_ENCODING_EXPORTERS = (SpanExporter, HttpSpanExporter)
#: Each reference exporter class and the library's exporter that replaces it in place.
_ADOPTED = {_ReferenceSpanExporter: SpanExporter, _ReferenceHttpSpanExporter: HttpSpanExporter}


class EncodingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's ``BatchSpanProcessor`` (same queue, ``OTEL_BSP_*`` settings, worker thread,
    flush, shutdown and self-metrics) that encodes each span when it ends and queues its bytes.

    Why: a queued span keeps ~30 objects alive until its batch is exported, so they age through
    the garbage collector's generations, and the exporter thread then encodes spans that have
    left the CPU caches while it holds the GIL. Encoding at ``on_end`` (after the scrubbing
    processor's ``_on_ending``) costs the request the same ~7 us and frees the span at once;
    the exporter thread is left with framing and the gRPC call. Its exporter must be a
    :class:`SpanExporter`. A span that cannot be encoded here is queued as it is, and the
    exporter encodes it with the rest of its batch (and logs what it skips)."""

    def __init__(self, span_exporter: SpanExporter | HttpSpanExporter, **settings: Any) -> None:
        if not isinstance(span_exporter, _ENCODING_EXPORTERS):
            raise TypeError(f"{type(self).__name__} needs an otel._otlp.SpanExporter or "
                            f"HttpSpanExporter, not {type(span_exporter).__name__}")
        super().__init__(span_exporter, **settings)

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the sampled span's encoding."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        item: ReadableSpan | EncodedSpan
        try:
            item = EncodedSpan(span.resource, span.instrumentation_scope or None, _span(span))
        except Exception:  # never raise into Span.end(); the exporter encodes it again
            item = span
        self._batch_processor.emit(item)  # type: ignore[arg-type]


def adopt(tracer_provider: TracerProvider) -> int:
    """Make the distro's OTLP span exporters encode with :func:`encode_spans`; the count.

    ``opentelemetry-instrument`` puts each configured exporter in a ``BatchSpanProcessor``.
    Each reference ``OTLPSpanExporter`` found there (gRPC or HTTP) becomes the library's
    exporter of its protocol in place (its class is switched: the subclass adds no state), so
    it keeps everything it was built with: endpoint, headers, credentials, compression,
    timeout, channel or session, and self-metrics; its processor becomes an
    :class:`EncodingBatchSpanProcessor` the same way (queue, settings and worker thread kept).
    """
    adopted = 0
    for processor in tracer_provider._active_span_processor._span_processors:
        if not isinstance(processor, BatchSpanProcessor):
            continue
        exporter = processor.span_exporter
        replacement = _ADOPTED.get(type(exporter))
        if replacement is not None:
            exporter.__class__ = replacement
            if isinstance(exporter, SpanExporter):
                exporter._client = _RawTraceStub(exporter._channel)  # type: ignore[assignment]
            adopted += 1
        if type(processor) is BatchSpanProcessor and type(exporter) in _ENCODING_EXPORTERS:
            processor.__class__ = EncodingBatchSpanProcessor  # adds no state
    return adopted
