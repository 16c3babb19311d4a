"""Kafka client spans: the contrib aiokafka instrumentation's spans, made leanly and safely.

Why
    ``opentelemetry-instrumentation-aiokafka`` runs the producer's partitioner (and waits for
    topic metadata) a second time inside every traced ``send`` only to label the span with a
    partition, and sets each attribute with its own locked call: on the benchmark machine it
    added 75-100 us of CPU per message (``docs/benchmarks.md``); its ``receive`` span cost
    about 50 us per consumed record. Worse, its consumer side reads the record headers with a
    getter that raises on a ``traceparent``, ``tracestate`` or ``baggage`` value that is not
    UTF-8 bytes (``UnicodeDecodeError``, ``AttributeError``): ``getone()``/``getmany()`` then
    raise after the record was fetched, so one malformed header stops the consumer, and after a
    restart it stops again on the same record. This module replaces ``AIOKafkaProducer.send``
    (and wraps its ``_partition`` step, see below) and ``AIOKafkaConsumer.getone``/``getmany``
    with wrappers that make the contrib's spans (names, kinds, parents, links and attributes;
    the differences are listed below); a header value the contrib's getter would choke on
    reads as absent (:class:`otel.kafka.KafkaHeadersGetter`), and nothing telemetry does
    raises into the producer or the consumer.

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

The CONSUMER spans (the contrib's names, parents and attributes)
    ``getone()``: one ``"{topic} receive"`` span per record, ended before ``getone`` returns,
    whose parent is the context in the record headers (without one, a new trace): the common
    attributes, ``messaging.consumer.group.name`` (when the consumer has a group),
    ``messaging.operation.name``/``type`` = ``receive``, ``messaging.destination.name``,
    ``messaging.destination.partition.id``, ``messaging.kafka.message.key`` (when the record
    has one), ``messaging.kafka.message.offset`` and ``messaging.message.id`` =
    ``{topic}.{partition}.{offset}``. ``getmany()``: a ``"{topics} receive"`` span (the sorted
    topic names joined by ``, ``) with ``messaging.batch.message_count``, holding one
    ``"{topic} receive"`` span per partition (destination, partition id, its record count)
    that links to each of its records' ``receive`` spans (children of their headers' context,
    as with ``getone``).

Differences from the contrib (deliberate; ``docs/conventions.md`` lists them too)
    * A failed ``send``: ``error.type`` (the exception's qualified class name) and a status
      described by the class name only; the contrib writes no ``error.type`` and
      ``"{class}: {message}"`` (the message stays in the ``exception`` event).
    * The PRODUCER span is not made current while ``send`` runs (nothing under it makes
      spans); instrumentation scope ``otel.aiokafka``; the contrib's hooks are not called.

Failures of the telemetry itself
    Whatever this module's own code raises (span start, attributes, header injection or
    extraction, span end) is caught: ``send`` runs exactly once (with the record headers as
    the caller gave them if the injection failed) and returns or raises what it would
    without instrumentation; ``getone``/``getmany`` return the fetched records. The span is
    dropped (or ended as far as it got); the first failure is logged at WARNING on the
    ``otel`` logger (:func:`otel._sdk.telemetry_failed`).

Usage
    :func:`otel.configure` calls :func:`replace_contrib` after the contrib instrumentation is in
    place (the distro's, or the one standalone mode applies). :func:`restore_contrib` puts the
    contrib's wrappers and the producer's ``_partition`` back. The contrib's produce and
    consume hooks are not called (the distro configures none).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, MutableSequence, Sequence
from contextvars import ContextVar
from typing import Any

import aiokafka
from aiokafka.structs import ConsumerRecord, TopicPartition
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Setter
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS
from opentelemetry.trace import Span, SpanKind

from otel._sdk import start_span, telemetry_failed
from otel._spans import fail_span
from otel.kafka.propagation import kafka_headers_getter

__all__ = ["AiokafkaInstrumentor", "replace_contrib", "restore_contrib"]

SCOPE_NAME = "otel.aiokafka"
_MODULE = "aiokafka"
Headers = MutableSequence[tuple[str, bytes | None]]
_PARTITION_ID = msg.MESSAGING_DESTINATION_PARTITION_ID
_RECEIVE = msg.MessagingOperationTypeValues.RECEIVE.value
#: The PRODUCER span of the ``send`` running in this task, for the ``_partition`` wrapper.
_SENDING: ContextVar[Span | None] = ContextVar("otel_aiokafka_sending", default=None)


class _HeaderSetter(Setter[Headers]):
    """Appends ``(key, value as UTF-8)`` to the record headers (as the contrib's setter)."""

    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier.append((key, value.encode("utf-8")))


_SETTER = _HeaderSetter()


def _client_attributes(client: Any) -> dict[str, Any]:
    """The attributes every span of ``client`` (an ``AIOKafkaClient``) carries."""
    return {
        msg.MESSAGING_SYSTEM: msg.MessagingSystemValues.KAFKA.value,
        SERVER_ADDRESS: json.dumps(client._bootstrap_servers),
        msg.MESSAGING_CLIENT_ID: client._client_id,
    }


def _producer_attributes(producer: Any) -> dict[str, Any]:
    """Attributes that depend only on the producer, cached on it."""
    cached: dict[str, Any] | None = producer.__dict__.get("_otel_span_attributes")
    if cached is None:
        cached = {
            **_client_attributes(producer.client),
            msg.MESSAGING_OPERATION_NAME: "send",
            msg.MESSAGING_OPERATION_TYPE: msg.MessagingOperationTypeValues.PUBLISH.value,
        }
        producer.__dict__["_otel_span_attributes"] = cached
    return cached


def _consumer_attributes(consumer: Any) -> dict[str, Any]:
    """Attributes of every receive span of ``consumer``, cached on it."""
    cached: dict[str, Any] | None = consumer.__dict__.get("_otel_span_attributes")
    if cached is None:
        cached = _client_attributes(consumer._client)
        if consumer._group_id is not None:
            cached[msg.MESSAGING_CONSUMER_GROUP_NAME] = consumer._group_id
        cached |= {msg.MESSAGING_OPERATION_NAME: "receive", msg.MESSAGING_OPERATION_TYPE: _RECEIVE}
        consumer.__dict__["_otel_span_attributes"] = cached
    return cached


def _key_text(key: object) -> str:
    """A record key as the contrib writes it: UTF-8 text, else ``str()`` of the value."""
    if isinstance(key, bytes):
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return str(key)


def _start_send(tracer: trace.Tracer, producer: Any, topic: str, key: Any,
                headers: Headers) -> Span | None:
    """The PRODUCER span, its context written into ``headers``; None (headers as they were,
    the failure reported) if either step raised."""
    appended = len(headers)
    try:
        attributes = {**_producer_attributes(producer), msg.MESSAGING_DESTINATION_NAME: topic}
        if key is not None:
            attributes[msg.MESSAGING_KAFKA_MESSAGE_KEY] = _key_text(key)
        span = start_span(tracer, f"{topic} send", None, SpanKind.PRODUCER, attributes)
        propagate.inject(headers, context=trace.set_span_in_context(span), setter=_SETTER)
    except Exception:
        del headers[appended:]
        telemetry_failed(_MODULE, "starting the send span")
        return None
    return span


def _end_send(span: Span, error: BaseException | None) -> None:
    """End the PRODUCER span (failed by ``error``); never raises."""
    try:
        if error is not None:
            fail_span(span, error)
        span.end()
    except Exception:
        telemetry_failed(_MODULE, "ending the send span")


def _traced_send(tracer: trace.Tracer, send: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(send)
    async def traced_send(self: Any, topic: str, value: Any = None, key: Any = None,
                          partition: int | None = None, timestamp_ms: int | None = None,
                          headers: Headers | None = None) -> Any:
        headers = [] if headers is None else headers
        span = _start_send(tracer, self, topic, key, headers)
        if span is None:
            return await send(self, topic, value, key, partition, timestamp_ms, headers)
        token = _SENDING.set(span)
        try:
            result = await send(self, topic, value, key, partition, timestamp_ms, headers)
        except BaseException as exc:
            _SENDING.reset(token)
            _end_send(span, exc)
            raise
        _SENDING.reset(token)
        _end_send(span, None)
        return result

    return traced_send


def _recording_partition(partition_of: Callable[..., int]) -> Callable[..., int]:
    """``AIOKafkaProducer._partition`` that also labels the current lean send span."""

    @functools.wraps(partition_of)
    def _partition(self: Any, *args: Any) -> int:
        chosen = partition_of(self, *args)
        span = _SENDING.get()
        if span is not None:
            try:
                span.set_attribute(_PARTITION_ID, str(chosen))
            except Exception:
                telemetry_failed(_MODULE, "labelling the send span with its partition")
        return chosen

    return _partition


def _header_context(record: ConsumerRecord[Any, Any]) -> Context:
    """The context in the record headers (empty without one); never raises."""
    try:
        return propagate.extract(record.headers, getter=kafka_headers_getter)
    except Exception:  # a configured third-party propagator must not stop the consumer
        telemetry_failed(_MODULE, "extracting a record's trace context (the receive span "
                         "starts a new trace)")
        return Context()


def _receive_span(tracer: trace.Tracer, consumer: Any, record: ConsumerRecord[Any, Any]) -> Span:
    """The ended ``"{topic} receive"`` span of one record."""
    attributes = {**_consumer_attributes(consumer),
                  msg.MESSAGING_DESTINATION_NAME: record.topic,
                  msg.MESSAGING_DESTINATION_PARTITION_ID: str(record.partition),
                  msg.MESSAGING_KAFKA_MESSAGE_OFFSET: record.offset,
                  msg.MESSAGING_MESSAGE_ID: f"{record.topic}.{record.partition}.{record.offset}"}
    if record.key is not None:
        attributes[msg.MESSAGING_KAFKA_MESSAGE_KEY] = _key_text(record.key)
    span = start_span(tracer, f"{record.topic} receive", _header_context(record),
                      SpanKind.CONSUMER, attributes)
    span.end()
    return span


def _batch_spans(tracer: trace.Tracer, consumer: Any,
                 batch: Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]]) -> None:
    """The spans of one ``getmany`` batch: poll span, per-partition spans, receive spans."""
    common = _consumer_attributes(consumer)
    topics = ", ".join(sorted({tp.topic for tp in batch}))
    count = sum(len(records) for records in batch.values())
    with tracer.start_as_current_span(f"{topics} receive", kind=SpanKind.CONSUMER,
                                      attributes={**common,
                                                  msg.MESSAGING_BATCH_MESSAGE_COUNT: count}):
        for tp, records in batch.items():
            attributes = {**common, msg.MESSAGING_DESTINATION_NAME: tp.topic,
                          msg.MESSAGING_DESTINATION_PARTITION_ID: str(tp.partition),
                          msg.MESSAGING_BATCH_MESSAGE_COUNT: len(records)}
            with tracer.start_as_current_span(f"{tp.topic} receive", kind=SpanKind.CONSUMER,
                                              attributes=attributes) as partition_span:
                for record in records:
                    received = _receive_span(tracer, consumer, record)
                    partition_span.add_link(received.get_span_context())


def _traced_getone(tracer: trace.Tracer, getone: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(getone)
    async def traced_getone(self: Any, *partitions: TopicPartition) -> Any:
        record = await getone(self, *partitions)
        try:
            _receive_span(tracer, self, record)
        except Exception:  # the record is fetched: telemetry must not lose it
            telemetry_failed(_MODULE, "the receive span of a getone() record")
        return record

    return traced_getone


def _traced_getmany(tracer: trace.Tracer, getmany: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(getmany)
    async def traced_getmany(self: Any, *partitions: TopicPartition, **kwargs: Any) -> Any:
        batch = await getmany(self, *partitions, **kwargs)
        if batch:
            try:
                _batch_spans(tracer, self, batch)
            except Exception:  # the records are fetched: telemetry must not lose them
                telemetry_failed(_MODULE, "the receive spans of a getmany() batch")
        return batch

    return traced_getmany


#: (class, method, lean wrapper maker) of every contrib wrapper this module replaces.
_TARGETS: tuple[tuple[type, str, Callable[[trace.Tracer, Callable[..., Any]],
                                          Callable[..., Any]]], ...] = (
    (aiokafka.AIOKafkaProducer, "send", _traced_send),
    (aiokafka.AIOKafkaConsumer, "getone", _traced_getone),
    (aiokafka.AIOKafkaConsumer, "getmany", _traced_getmany),
)
_contrib: dict[tuple[type, str], Callable[..., Any]] = {}
_original_partition: Callable[..., int] | None = None


def replace_contrib(tracer_provider: trace.TracerProvider | None = None) -> bool:
    """Put the lean ``send``, ``getone`` and ``getmany`` in place of the contrib
    instrumentation's; False if the contrib instrumentation is not applied (then nothing
    changes)."""
    global _original_partition
    if _contrib:
        return True
    if getattr(aiokafka.AIOKafkaProducer.__dict__["send"], "__wrapped__", None) is None:
        return False
    tracer = trace.get_tracer(SCOPE_NAME, tracer_provider=tracer_provider)
    for cls, name, make in _TARGETS:
        current = cls.__dict__[name]
        _contrib[(cls, name)] = current
        setattr(cls, name, make(tracer, current.__wrapped__))
    _original_partition = aiokafka.AIOKafkaProducer.__dict__["_partition"]
    aiokafka.AIOKafkaProducer._partition = _recording_partition(_original_partition)
    return True


def restore_contrib() -> None:
    """Put the contrib instrumentation's wrappers and the producer's ``_partition`` back."""
    global _original_partition
    for (cls, name), wrapper in _contrib.items():
        setattr(cls, name, wrapper)
    _contrib.clear()
    if _original_partition is not None:
        aiokafka.AIOKafkaProducer._partition = _original_partition
        _original_partition = None


class AiokafkaInstrumentor:
    """Standalone mode's aiokafka instrumentation: the contrib's, then the lean wrappers."""

    def __init__(self) -> None:
        from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor

        self._contrib = AIOKafkaInstrumentor()

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return bool(self._contrib.is_instrumented_by_opentelemetry)

    def instrument(self, *, tracer_provider: trace.TracerProvider | None = None,
                   **kwargs: Any) -> None:
        self._contrib.instrument(tracer_provider=tracer_provider, **kwargs)
        replace_contrib(tracer_provider)

    def uninstrument(self) -> None:
        restore_contrib()
        self._contrib.uninstrument()
