"""Trace context across Kafka: W3C headers plus the event body, and a handler ``process`` span.

Usage
-----

Producing (the producer has no serialisers; values and keys are bytes):

.. code:: python

    from aiokafka import AIOKafkaProducer
    from otel.kafka import send_event

    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9092",
                                enable_idempotence=True, acks="all")
    await producer.start()
    with tracer.start_as_current_span("handle request"):
        await send_event(producer, "conversation.events", {"session_id": "s1"}, key="s1")

``send_event`` writes ``traceparent``, ``tracestate`` and ``baggage`` (whatever the global
propagator carries) into the record headers and into the body's ``trace_context`` object.
With ``opentelemetry-instrumentation-aiokafka`` active, the headers are written by its ``send``
span (a child of the current span) instead, so a record never carries two ``traceparent``.

Consuming, inside your own loop (:class:`otel.dlq.EventConsumer` does this for you, with
retries and a dead-letter queue):

.. code:: python

    from otel.kafka import process_span

    record = await consumer.getone()
    event = json.loads(record.value)
    with process_span(record, consumer_group="conversation-worker", body=event):
        await handle(event)          # its spans, logs and sends belong to the producer's trace

Span relationships, with or without the aiokafka instrumentation:

* ``process {topic}`` (kind CONSUMER) has as parent the producer's context, read from the
  headers first and the body's ``trace_context`` second. Attributes: ``messaging.system``,
  ``messaging.operation.name``/``type`` = ``process``, ``messaging.destination.name``,
  ``messaging.destination.partition.id``, ``messaging.kafka.offset``,
  ``messaging.consumer.group.name``, ``messaging.kafka.message.key`` (when UTF-8) and
  ``messaging.kafka.message.tombstone``.
* The instrumentation's ``{topic} receive`` span (ended before ``getone`` returns, as the
  contrib does, contrib issue #3465; made by :mod:`otel._aiokafka`) has the same parent, so it
  is a sibling of ``process``: no orphan, no duplicate. ``process`` does not link to it: the
  instrumentation does not expose it.
* Use ``getone()``: the instrumentation's ``getmany()`` opens a batch ``receive`` span that
  starts a trace of its own.

Missing or malformed context
----------------------------

A context that is missing, or present but unusable (``traceparent`` that does not parse, a
header value that is null, not bytes or not UTF-8, a body ``trace_context`` that is not an
object or holds non-strings, any field longer than :data:`MAX_FIELD_BYTES`), never raises: the
record starts a new trace and the counter ``soma_trace_context_invalid_total`` (unit
``{record}``) counts it with ``source`` = ``header`` | ``body`` | ``none`` and ``reason`` =
``not_bytes`` | ``not_utf8`` | ``too_large`` | ``invalid_traceparent`` | ``not_object`` |
``not_string`` | ``missing`` (``missing`` only with ``source="none"``: neither source had a
``traceparent``). A valid header context wins even if the body's is broken (then not counted).

Arguments
---------

``process_span(record, *, consumer_group, body=None, tracer_provider=None,
meter_provider=None, hook=None)``: providers default to the global ones; ``hook(span, record)``
runs when the span starts and may add attributes; its exceptions are logged, never raised.
"""

from otel.kafka.process import ProcessHook, process_span, process_span_attributes
from otel.kafka.propagation import (
    MAX_FIELD_BYTES,
    TRACE_CONTEXT_FIELD,
    TRACE_CONTEXT_INVALID_TOTAL,
    Headers,
    KafkaHeadersGetter,
    KafkaHeadersSetter,
    aiokafka_instrumented,
    encode_event,
    extract_context,
    kafka_headers_getter,
    kafka_headers_setter,
    send_event,
)

__all__ = [
    "MAX_FIELD_BYTES",
    "TRACE_CONTEXT_FIELD",
    "TRACE_CONTEXT_INVALID_TOTAL",
    "Headers",
    "KafkaHeadersGetter",
    "KafkaHeadersSetter",
    "ProcessHook",
    "aiokafka_instrumented",
    "encode_event",
    "extract_context",
    "kafka_headers_getter",
    "kafka_headers_setter",
    "process_span",
    "process_span_attributes",
    "send_event",
]
