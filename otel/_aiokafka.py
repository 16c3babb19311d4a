"""Kafka producer spans: the contrib aiokafka instrumentation, with a lean ``send``.

Why
    ``opentelemetry-instrumentation-aiokafka`` runs the producer's partitioner (and waits for
    topic metadata) a second time inside every traced ``send`` only to label the span with a
    partition, and sets each attribute with its own locked call: on the benchmark machine it
    added 75-100 us of CPU per message (``docs/benchmarks.md``). Its consumer side
    (``getone``/``getmany`` receive spans) stays as it is; only ``AIOKafkaProducer.send`` is
    replaced (and its ``_partition`` step wrapped, see below).

The PRODUCER span (the contrib's attributes, one map)
    Name ``"{topic} send"``; ``messaging.system`` = ``kafka``, ``messaging.destination.name``,
    ``messaging.operation.name`` = ``send``, ``messaging.operation.type`` = ``publish``,
    ``messaging.client.id``, ``server.address`` (the bootstrap servers, JSON-encoded as the
    contrib writes them), ``messaging.kafka.message.key`` when the record has a key, and
    ``messaging.destination.partition.id``: the partition the producer's own ``_partition``
    step picked for the record (recorded by wrapping that step, so the partitioner runs once;
    absent only when ``send`` failed before it). The span covers the ``send`` call (queueing
    the record), not the broker's acknowledgement, as in the contrib;
    its context is written into the record headers (W3C ``traceparent``/``tracestate``/
    ``baggage``, with the global propagator) so that the consumer's spans link to it. An
    exception raised by ``send`` sets status ERROR and ``error.type``.

Usage
    :func:`otel.configure` calls :func:`replace_send` after the contrib instrumentation is in
    place (the distro's, or the one standalone mode applies). :func:`restore_send` puts the
    contrib's wrapper and the producer's ``_partition`` back.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, MutableSequence
from contextvars import ContextVar
from typing import Any

import aiokafka
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Setter
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from otel._sdk import start_span
from otel._spans import error_type_of

__all__ = ["AiokafkaInstrumentor", "replace_send", "restore_send"]

SCOPE_NAME = "otel.aiokafka"
Headers = MutableSequence[tuple[str, bytes | None]]
_PARTITION_ID = "messaging.destination.partition.id"
#: The PRODUCER span of the ``send`` running in this task, for the ``_partition`` wrapper.
_SENDING: ContextVar[Span | None] = ContextVar("otel_aiokafka_sending", default=None)


class _HeaderSetter(Setter[Headers]):
    """Appends ``(key, value as UTF-8)`` to the record headers (as the contrib's setter)."""

    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier.append((key, value.encode("utf-8")))


_SETTER = _HeaderSetter()


def _client_attributes(producer: Any) -> dict[str, Any]:
    """Attributes that depend only on the producer, cached on it."""
    cached: dict[str, Any] | None = producer.__dict__.get("_otel_span_attributes")
    if cached is None:
        client = producer.client
        cached = {
            "messaging.system": "kafka",
            "server.address": json.dumps(client._bootstrap_servers),
            "messaging.client.id": client._client_id,
            "messaging.operation.name": "send",
            "messaging.operation.type": "publish",
        }
        producer.__dict__["_otel_span_attributes"] = cached
    return cached


def _traced_send(tracer: trace.Tracer, send: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(send)
    async def traced_send(self: Any, topic: str, value: Any = None, key: Any = None,
                          partition: int | None = None, timestamp_ms: int | None = None,
                          headers: Headers | None = None) -> Any:
        attributes = {**_client_attributes(self), "messaging.destination.name": topic}
        if key is not None:
            attributes["messaging.kafka.message.key"] = (
                key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key))
        span = start_span(tracer, f"{topic} send", None, SpanKind.PRODUCER, attributes)
        headers = [] if headers is None else headers
        propagate.inject(headers, context=trace.set_span_in_context(span), setter=_SETTER)
        token = _SENDING.set(span)
        try:
            return await send(self, topic, value, key, partition, timestamp_ms, headers)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_attributes({ERROR_TYPE: error_type_of(exc)})
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            _SENDING.reset(token)
            span.end()

    return traced_send


def _recording_partition(partition_of: Callable[..., int]) -> Callable[..., int]:
    """``AIOKafkaProducer._partition`` that also labels the current lean send span."""

    @functools.wraps(partition_of)
    def _partition(self: Any, *args: Any) -> int:
        chosen = partition_of(self, *args)
        span = _SENDING.get()
        if span is not None:
            span.set_attribute(_PARTITION_ID, str(chosen))
        return chosen

    return _partition


_contrib_send: Callable[..., Any] | None = None
_original_partition: Callable[..., int] | None = None


def replace_send(tracer_provider: trace.TracerProvider | None = None) -> bool:
    """Put the lean ``send`` in place of the contrib instrumentation's; False if the contrib
    instrumentation is not applied (then nothing changes)."""
    global _contrib_send, _original_partition
    current = aiokafka.AIOKafkaProducer.__dict__["send"]
    original = getattr(current, "__wrapped__", None)
    if _contrib_send is not None or original is None:
        return _contrib_send is not None
    tracer = trace.get_tracer(SCOPE_NAME, tracer_provider=tracer_provider)
    _contrib_send = current
    aiokafka.AIOKafkaProducer.send = _traced_send(tracer, original)
    _original_partition = aiokafka.AIOKafkaProducer.__dict__["_partition"]
    aiokafka.AIOKafkaProducer._partition = _recording_partition(_original_partition)
    return True


def restore_send() -> None:
    """Put the contrib instrumentation's ``send`` back."""
    global _contrib_send, _original_partition
    if _contrib_send is not None:
        aiokafka.AIOKafkaProducer.send = _contrib_send
        _contrib_send = None
    if _original_partition is not None:
        aiokafka.AIOKafkaProducer._partition = _original_partition
        _original_partition = None


class AiokafkaInstrumentor:
    """Standalone mode's aiokafka instrumentation: the contrib's, then the lean ``send``."""

    def __init__(self) -> None:
        from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor

        self._contrib = AIOKafkaInstrumentor()

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return bool(self._contrib.is_instrumented_by_opentelemetry)

    def instrument(self, *, tracer_provider: trace.TracerProvider | None = None,
                   **kwargs: Any) -> None:
        self._contrib.instrument(tracer_provider=tracer_provider, **kwargs)
        replace_send(tracer_provider)

    def uninstrument(self) -> None:
        restore_send()
        self._contrib.uninstrument()
