"""W3C trace context in Kafka record headers and in the event body's ``trace_context`` object.

See :mod:`otel.kafka` for the manual.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, MutableSequence, Sequence
from functools import cache
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import Counter, MeterProvider
from opentelemetry.propagators import textmap

_LOG = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes | None]]
"""Kafka record headers as aiokafka hands them out: ``(key, value)`` pairs, value may be null."""

TRACE_CONTEXT_FIELD: Final = "trace_context"
"""The event body's key holding the W3C carrier (``traceparent``, ``tracestate``, ``baggage``)."""

MAX_FIELD_BYTES: Final = 8192
"""Longest accepted value of one propagation field (W3C baggage's own limit); longer is invalid."""

TRACE_CONTEXT_INVALID_TOTAL: Final = "soma_trace_context_invalid_total"
"""Counter of records whose trace context was missing or unusable; labels ``source``, ``reason``."""

_TRACEPARENT: Final = "traceparent"


class KafkaHeadersGetter(textmap.Getter[Headers]):
    """Read propagation fields from Kafka headers; never raises on values of the wrong type.

    The first header with the key wins (the aiokafka instrumentation's getter does the same).
    A value that is null, not ``bytes``, not UTF-8 or longer than :data:`MAX_FIELD_BYTES` reads
    as absent.
    """

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        """Return the first header named ``key`` decoded as UTF-8, or None if unusable."""
        text, _ = _header_text(_first_header(carrier, key))
        return None if text is None else [text]

    def keys(self, carrier: Headers) -> list[str]:
        """Return the header keys in record order."""
        return [item[0] for item in _pairs(carrier)]


class KafkaHeadersSetter(textmap.Setter[MutableSequence[tuple[str, bytes | None]]]):
    """Write a propagation field into Kafka headers, replacing any header with the same key."""

    def set(
        self, carrier: MutableSequence[tuple[str, bytes | None]], key: str, value: str
    ) -> None:
        """Drop every header named ``key`` and append ``(key, value as UTF-8)``."""
        carrier[:] = [item for item in carrier if item[0] != key]
        carrier.append((key, value.encode("utf-8")))


kafka_headers_getter: Final = KafkaHeadersGetter()
kafka_headers_setter: Final = KafkaHeadersSetter()


def propagation_fields() -> frozenset[str]:
    """Return the header/body keys the global propagator reads and writes."""
    return frozenset(propagate.get_global_textmap().fields)


def encode_event(
    event: Mapping[str, Any],
    headers: Headers | None = None,
    *,
    context: Context | None = None,
    inject_headers: bool = True,
) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    """Serialise ``event`` with the current trace context; return ``(value, headers)``.

    The body becomes compact UTF-8 JSON of ``event`` whose ``trace_context`` holds the
    propagator's carrier. ``headers`` are copied without any stale propagation field; when
    ``inject_headers`` is true the carrier is written into them too.
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    body = {**event, TRACE_CONTEXT_FIELD: carrier}
    value = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    fields = propagation_fields()
    out = [item for item in _pairs(headers or ()) if item[0] not in fields]
    if inject_headers:
        propagate.inject(out, context=context, setter=kafka_headers_setter)
    return value, out


def aiokafka_instrumented() -> bool:
    """Tell whether opentelemetry-instrumentation-aiokafka currently wraps aiokafka."""
    try:
        from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    except ImportError:
        return False
    return bool(AIOKafkaInstrumentor().is_instrumented_by_opentelemetry)


async def send_event(
    producer: AIOKafkaProducer,
    topic: str,
    event: Mapping[str, Any],
    *,
    key: str | bytes | None = None,
    headers: Headers | None = None,
    partition: int | None = None,
) -> RecordMetadata:
    """Produce ``event`` as JSON to ``topic`` with the current trace context; wait for the ack.

    The producer must have no serialisers (values and keys are bytes). When the aiokafka
    instrumentation is active, it writes the headers from its own ``send`` span (a child of
    the current span), so this function leaves the header injection to it and only the body
    carries the current span's context.
    """
    value, out = encode_event(event, headers, inject_headers=not aiokafka_instrumented())
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    future = await producer.send(
        topic, value=value, key=key_bytes, partition=partition, headers=out
    )
    return await future


@cache
def _invalid_counter(meter_provider: MeterProvider | None) -> Counter:
    meter = metrics.get_meter("otel.kafka", meter_provider=meter_provider)
    return meter.create_counter(
        TRACE_CONTEXT_INVALID_TOTAL,
        unit="{record}",
        description="Consumed records whose trace context was missing or malformed.",
    )


def extract_context(
    headers: Headers,
    body: object = None,
    *,
    meter_provider: MeterProvider | None = None,
) -> Context:
    """Return the producer's context from ``headers``, else from ``body``, else a root context.

    ``body`` is the decoded event (any JSON value, or None when undecodable). A source whose
    ``traceparent`` is present but unusable counts once in
    ``soma_trace_context_invalid_total{source="header"|"body", reason}``; when neither source
    has one, ``{source="none", reason="missing"}`` counts once. Never raises.
    """
    counter = _invalid_counter(meter_provider)
    carrier, header_problem = _header_carrier(headers)
    if carrier is not None:
        found = _extract_valid(carrier, textmap.default_getter)
        if found is not None:
            return found
        header_problem = "invalid_traceparent"
    if header_problem != "missing":
        counter.add(1, {"source": "header", "reason": header_problem})

    body_carrier, body_problem = _body_carrier(body)
    if body_carrier is not None:
        found = _extract_valid(body_carrier, textmap.default_getter)
        if found is not None:
            return found
        body_problem = "invalid_traceparent"
    if body_problem != "missing":
        counter.add(1, {"source": "body", "reason": body_problem})

    if header_problem == "missing" and body_problem == "missing":
        counter.add(1, {"source": "none", "reason": "missing"})
    return Context()


def _pairs(headers: object) -> list[tuple[str, bytes | None]]:
    """Return the well-formed ``(str, value)`` pairs of ``headers``; anything else is skipped."""
    if not isinstance(headers, Sequence) or isinstance(headers, str | bytes):
        return []
    return [
        (item[0], item[1])
        for item in headers
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
    ]


def _first_header(headers: Headers, key: str) -> object:
    for item_key, value in _pairs(headers):
        if item_key == key:
            return value
    return None


def _header_carrier(headers: Headers) -> tuple[dict[str, str] | None, str]:
    """Return the headers' usable carrier, or None and why (a reason or "missing").

    The carrier holds the first value of each propagation field (and of ``traceparent``) as
    :class:`KafkaHeadersGetter` reads it; a field whose first value it would read as absent
    makes the whole context unusable, with the reason.
    """
    wanted = propagation_fields() | {_TRACEPARENT}
    first: dict[str, bytes | None] = {}
    for key, value in _pairs(headers):
        if key in wanted and key not in first:
            first[key] = value
    if _TRACEPARENT not in first:
        return None, "missing"
    carrier: dict[str, str] = {}
    for field, value in first.items():
        text, problem = _header_text(value)
        if text is None:
            return None, problem
        carrier[field] = text
    return carrier, ""


def _header_text(value: object) -> tuple[str | None, str]:
    """Return a header value as text, or None and why it is unusable (the reason label)."""
    if not isinstance(value, bytes):
        return None, "not_bytes"
    if len(value) > MAX_FIELD_BYTES:
        return None, "too_large"
    try:
        return value.decode("utf-8"), ""
    except UnicodeDecodeError:
        return None, "not_utf8"


def _body_carrier(body: object) -> tuple[dict[str, str] | None, str]:
    """Return the body's usable carrier, or None and why (a reason or "missing")."""
    if not isinstance(body, Mapping) or TRACE_CONTEXT_FIELD not in body:
        return None, "missing"
    raw = body[TRACE_CONTEXT_FIELD]
    if not isinstance(raw, Mapping):
        return None, "not_object"
    if _TRACEPARENT not in raw:
        return None, "missing"
    carrier: dict[str, str] = {}
    for field in propagation_fields():
        if field not in raw:
            continue
        value = raw[field]
        if not isinstance(value, str):
            return None, "not_string"
        if len(value.encode("utf-8", "surrogatepass")) > MAX_FIELD_BYTES:
            return None, "too_large"
        carrier[field] = value
    return carrier, ""


def _extract_valid(carrier: Any, getter: textmap.Getter[Any]) -> Context | None:
    """Extract with the global propagator; return the context if it holds a valid span."""
    try:
        extracted = propagate.extract(carrier, context=Context(), getter=getter)
    except Exception:  # a configured third-party propagator must not break consumption
        _LOG.warning("trace context propagator raised; starting a new trace", exc_info=True)
        return None
    if trace.get_current_span(extracted).get_span_context().is_valid:
        return extracted
    return None
