"""The CONSUMER ``process {topic}`` span that handler code runs in.

See :mod:`otel.kafka` for the manual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any, Final

from aiokafka.structs import ConsumerRecord
from opentelemetry import context, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.trace import Span, SpanKind, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from otel._sdk import start_span
from otel.kafka.propagation import extract_context

_LOG = logging.getLogger(__name__)

ProcessHook = Callable[[Span, ConsumerRecord[Any, Any]], None]
"""Called with the started process span and the record; its exceptions are logged, not raised."""

OPERATION: Final = "process"


def process_span_attributes(
    record: ConsumerRecord[Any, Any], consumer_group: str | None
) -> dict[str, AttributeValue]:
    """Return the messaging semantic-convention attributes of the process span of ``record``."""
    attributes: dict[str, AttributeValue] = {
        msg.MESSAGING_SYSTEM: msg.MessagingSystemValues.KAFKA.value,
        msg.MESSAGING_OPERATION_NAME: OPERATION,
        msg.MESSAGING_OPERATION_TYPE: msg.MessagingOperationTypeValues.PROCESS.value,
        msg.MESSAGING_DESTINATION_NAME: record.topic,
        msg.MESSAGING_DESTINATION_PARTITION_ID: str(record.partition),
        msg.MESSAGING_KAFKA_OFFSET: record.offset,
    }
    if consumer_group is not None:
        attributes[msg.MESSAGING_CONSUMER_GROUP_NAME] = consumer_group
    if isinstance(record.key, bytes):
        with suppress(UnicodeDecodeError):
            attributes[msg.MESSAGING_KAFKA_MESSAGE_KEY] = record.key.decode("utf-8")
    if record.value is None:
        attributes[msg.MESSAGING_KAFKA_MESSAGE_TOMBSTONE] = True
    return attributes


@lru_cache(maxsize=16)
def _tracer(tracer_provider: TracerProvider) -> Tracer:
    """The library's tracer of ``tracer_provider`` (a provider makes a new one per call)."""
    return tracer_provider.get_tracer("otel.kafka")


@contextmanager
def process_span(
    record: ConsumerRecord[Any, Any],
    *,
    consumer_group: str | None,
    body: object = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    hook: ProcessHook | None = None,
) -> Iterator[Span]:
    """Run the ``with`` block inside a CONSUMER ``process {topic}`` span for ``record``.

    The parent is the producer's context from the record headers, else from ``body``'s
    ``trace_context``, else none (a new trace; counted, see
    :func:`otel.kafka.propagation.extract_context`). Baggage from that context stays current
    inside the block. An exception leaving the block is recorded and sets ERROR status.
    """
    parent = extract_context(record.headers, body, meter_provider=meter_provider)
    tracer = _tracer(tracer_provider or trace.get_tracer_provider())
    span = start_span(tracer, f"{OPERATION} {record.topic}", parent, SpanKind.CONSUMER,
                      process_span_attributes(record, consumer_group))
    token = context.attach(parent)
    try:
        with trace.use_span(span, end_on_exit=True):
            if hook is not None:
                try:
                    hook(span, record)
                except Exception:
                    _LOG.exception("process hook raised; continuing")
            yield span
    finally:
        context.detach(token)
