"""The consume loop: process span, bounded retries, lossless dead-lettering, per-record commits.

See :mod:`otel.dlq` for the manual.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from opentelemetry import context, metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    Status,
    StatusCode,
    TracerProvider,
)

from otel.dlq.errors import (
    InvalidEventError,
    PermanentError,
    ProcessingError,
    UndecodableEventError,
    error_type,
)
from otel.dlq.headers import Failure, dead_letter_headers, dlq_topic
from otel.dlq.retry import Backoff, RetryPolicy
from otel.kafka.process import ProcessHook, process_span

_LOG = logging.getLogger(__name__)

Event = dict[str, Any]
Handler = Callable[[Event, ConsumerRecord[bytes, bytes]], Awaitable[None]]
"""``async def handler(event, record)``: raise to fail (see :mod:`otel.dlq.errors`)."""
Validator = Callable[[Event], None]
"""``validator(event)``: any exception marks the event invalid (DLQ at once, no retry)."""

DLQ_EVENTS_TOTAL: Final = "dlq_events_total"
SAMPLING_KEEP: Final = "soma.sampling.keep"

_FIXED_CONSUMER = frozenset(
    {"bootstrap_servers", "group_id", "enable_auto_commit", "key_deserializer",
     "value_deserializer"}
)
_FIXED_PRODUCER = frozenset(
    {"bootstrap_servers", "enable_idempotence", "acks", "key_serializer", "value_serializer",
     "transactional_id"}
)


def decode_event(value: bytes | None) -> Event:
    """Decode a record value into an event: a UTF-8 JSON object.

    Raises :class:`UndecodableEventError` for null, non-UTF-8 or non-JSON values and
    :class:`InvalidEventError` for JSON that is not an object.
    """
    if value is None:
        raise UndecodableEventError("record value is null (tombstone)")
    try:
        document = json.loads(value.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise UndecodableEventError(f"record value is not UTF-8 JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidEventError(f"event must be a JSON object, not {type(document).__name__}")
    return document


class _FinishInFlight(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hold a rebalance until the record in progress is handled and committed.

    Without it, a partition revoked while its record is processed moves to the new owner at
    the last committed offset: the record is processed twice (a second reply). aiokafka awaits
    ``on_partitions_revoked`` before the member rejoins, so the commit lands first. A handler
    that outlasts ``wait_seconds`` no longer holds the group: the rebalance goes on, and that
    record alone may be processed again by the new owner.
    """

    def __init__(self, between_records: asyncio.Event, wait_seconds: float) -> None:
        self._between_records = between_records
        self._wait_seconds = wait_seconds

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await asyncio.wait_for(self._between_records.wait(), self._wait_seconds)
        except TimeoutError:
            _LOG.warning(
                "a record was still in progress %.0f s into a rebalance; its partition may be "
                "processed again by its new owner", self._wait_seconds,
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _DeadLetter:
    """A DLQ write not yet acknowledged; kept while its source partition is blocked."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    source: TopicPartition
    offset: int
    error_type: str
    span_context: SpanContext
    failures: int = 0
    resume_at: float = 0.0
    paused: bool = False


class EventConsumer:
    """Consume ``topics`` with ``handler``; dead-letter what cannot be processed to ``T.dlq``.

    With ``handler=None`` it is a DLQ guard: records are only decoded and validated.
    """

    def __init__(
        self,
        topics: Sequence[str],
        handler: Handler | None,
        *,
        bootstrap_servers: str | list[str],
        group_id: str,
        validator: Validator | None = None,
        retry: RetryPolicy | None = None,
        dlq_backoff: Backoff | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        producer_config: Mapping[str, Any] | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        process_hook: ProcessHook | None = None,
        revoke_wait_seconds: float = 60.0,
    ) -> None:
        consumer_config = dict(consumer_config or {})
        producer_config = dict(producer_config or {})
        for name, given, fixed in (
            ("consumer_config", consumer_config, _FIXED_CONSUMER),
            ("producer_config", producer_config, _FIXED_PRODUCER),
        ):
            if clash := sorted(fixed & given.keys()):
                raise ValueError(f"{name} may not set {', '.join(clash)}")
        self._topics = list(topics)
        self._handler = handler
        self._validator = validator
        self._group_id = group_id
        self._bootstrap_servers = bootstrap_servers
        self._retry = retry or RetryPolicy()
        self._dlq_backoff = dlq_backoff or Backoff(initial=0.5, maximum=30.0)
        self._producer_config = producer_config
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._process_hook = process_hook
        self._consumer = AIOKafkaConsumer(
            **{"auto_offset_reset": "earliest", **consumer_config},
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
        )
        self._between_records = asyncio.Event()
        self._between_records.set()
        self._consumer.subscribe(
            self._topics, listener=_FinishInFlight(self._between_records, revoke_wait_seconds)
        )
        self._producer: AIOKafkaProducer | None = None
        self._blocked: dict[TopicPartition, _DeadLetter] = {}
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._dlq_events = metrics.get_meter(
            "otel.dlq", meter_provider=meter_provider
        ).create_counter(
            DLQ_EVENTS_TOTAL,
            unit="{event}",
            description="Records written to a dead-letter topic (counted on the broker's ack).",
        )

    async def start(self) -> None:
        """Connect the consumer and the DLQ producer; raises if the broker is unreachable."""
        await self._consumer.start()
        self._producer = await self._new_producer()

    async def stop(self) -> None:
        """Ask :meth:`run` to return after the current record, wait for it, then disconnect."""
        self._stopping.set()
        await self._idle.wait()
        await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def __aenter__(self) -> EventConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Process records one at a time until :meth:`stop` is called."""
        self._idle.clear()
        try:
            while not self._stopping.is_set():
                record = await self._next_record()
                if record is None:
                    continue
                self._between_records.clear()
                try:
                    await self._handle(record)
                finally:
                    self._between_records.set()
        finally:
            self._idle.set()

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **self._producer_config,
            bootstrap_servers=self._bootstrap_servers,
            enable_idempotence=True,
            acks="all",
        )
        await producer.start()
        return producer

    def _resume_due(self) -> float | None:
        """Resume blocked partitions whose backoff passed; return seconds to the next one."""
        assigned = self._consumer.assignment()
        now = time.monotonic()
        waits: list[float] = []
        for tp, letter in list(self._blocked.items()):
            if tp not in assigned:  # revoked: the new owner restarts from the committed offset
                del self._blocked[tp]
            elif letter.paused and letter.resume_at <= now:
                self._consumer.resume(tp)
                letter.paused = False
            elif letter.paused:
                waits.append(letter.resume_at - now)
        return min(waits) if waits else None

    async def _next_record(self) -> ConsumerRecord[bytes, bytes] | None:
        """Return the next record, or None when stopping or a blocked partition is due."""
        timeout = self._resume_due()
        getter = asyncio.ensure_future(self._fetch())
        stopper = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not getter.done():
            getter.cancel()
            await asyncio.wait({getter})
        if getter.cancelled():
            return None
        fetched: ConsumerRecord[bytes, bytes] = getter.result()
        return fetched

    async def _fetch(self) -> ConsumerRecord[bytes, bytes]:
        """``getone()``; a guard's is the uninstrumented one: it makes no ``receive`` span."""
        if self._handler is None:
            getone = inspect.unwrap(AIOKafkaConsumer.getone)
            guarded: ConsumerRecord[bytes, bytes] = await getone(self._consumer)
            return guarded
        record: ConsumerRecord[bytes, bytes] = await self._consumer.getone()
        return record

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        tp = TopicPartition(record.topic, record.partition)
        letter = self._blocked.get(tp)
        if letter is not None and letter.offset == record.offset:
            token = context.attach(trace.set_span_in_context(NonRecordingSpan(letter.span_context)))
            try:
                await self._dead_letter(letter)
            finally:
                context.detach(token)
            return
        self._blocked.pop(tp, None)

        failure: Failure | None = None
        event: Event = {}
        try:
            event = decode_event(record.value)
        except ProcessingError as exc:
            now = _now_ms()
            failure = Failure(exc, 1, now, now, exc.error_type)
        decoded = failure is None
        if decoded and self._handler is None:
            failure = self._validate(event)
            if failure is None:  # a guard: nothing processes a valid record, so it has no span
                await self._commit(tp, record.offset)
                return
        with process_span(
            record,
            consumer_group=self._group_id,
            body=event if decoded else None,
            tracer_provider=self._tracer_provider,
            meter_provider=self._meter_provider,
            hook=self._process_hook,
        ) as span:
            if failure is None and self._handler is not None:
                failure = await self._process(self._handler, event, record, span)
            if failure is None:
                await self._commit(tp, record.offset)
                return
            span.record_exception(failure.error)
            span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {failure.error_type}"))
            span.set_attribute(ERROR_TYPE, failure.error_type)
            span.set_attribute(SAMPLING_KEEP, True)
            span_context = span.get_span_context()
            await self._dead_letter(
                _DeadLetter(
                    topic=dlq_topic(record.topic),
                    key=record.key,
                    value=record.value,
                    headers=dead_letter_headers(
                        record,
                        consumer_group=self._group_id,
                        failure=failure,
                        trace_id=trace.format_trace_id(span_context.trace_id),
                    ),
                    source=tp,
                    offset=record.offset,
                    error_type=failure.error_type,
                    span_context=span_context,
                )
            )

    def _validate(self, event: Event) -> Failure | None:
        """Run the validator; return its failure (``invalid_event`` unless it says), or None."""
        if self._validator is None:
            return None
        try:
            self._validator(event)
        except Exception as exc:
            now = _now_ms()
            kind = error_type(exc) if isinstance(exc, ProcessingError) else "invalid_event"
            return Failure(exc, 1, now, now, kind)
        return None

    async def _process(
        self, handler: Handler, event: Event, record: ConsumerRecord[bytes, bytes], span: Span
    ) -> Failure | None:
        """Validate, then run the handler with retries; return the failure, or None on success."""
        failure = self._validate(event)
        if failure is not None:
            return failure
        first_ms = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                await handler(event, record)
            except Exception as exc:
                now = _now_ms()
                first_ms = first_ms or now
                if isinstance(exc, PermanentError) or attempt >= self._retry.max_attempts:
                    return Failure(exc, attempt, first_ms, now, error_type(exc))
                delay = self._retry.backoff.delay(attempt)
                span.add_event(
                    "retry",
                    {"attempt": attempt, ERROR_TYPE: error_type(exc), "delay_s": delay},
                )
                _LOG.warning(
                    "handler failed on %s[%d]@%d (attempt %d of %d); retrying in %.3f s",
                    record.topic, record.partition, record.offset, attempt,
                    self._retry.max_attempts, delay, exc_info=True,
                )
                await asyncio.sleep(delay)
            else:
                return None

    async def _dead_letter(self, letter: _DeadLetter) -> None:
        """Write ``letter`` and commit; on failure block its partition and schedule a retry."""
        try:
            if self._producer is None:
                self._producer = await self._new_producer()
            future = await self._producer.send(
                letter.topic, value=letter.value, key=letter.key, headers=list(letter.headers)
            )
            await future
        except Exception:
            letter.failures += 1
            delay = self._dlq_backoff.delay(letter.failures)
            _LOG.error(
                "DLQ write to %s failed (attempt %d); %s[%d] stays blocked at offset %d, "
                "retry in %.3f s; trace_id=%s",
                letter.topic, letter.failures, letter.source.topic, letter.source.partition,
                letter.offset, delay, trace.format_trace_id(letter.span_context.trace_id),
                exc_info=True,
            )
            await self._discard_producer()
            self._consumer.seek(letter.source, letter.offset)
            self._consumer.pause(letter.source)
            letter.resume_at = time.monotonic() + delay
            letter.paused = True
            self._blocked[letter.source] = letter
            return
        self._blocked.pop(letter.source, None)
        self._dlq_events.add(
            1, {"source_topic": letter.source.topic, "error_type": letter.error_type}
        )
        _LOG.warning(
            "dead-lettered %s[%d]@%d to %s (%s)", letter.source.topic, letter.source.partition,
            letter.offset, letter.topic, letter.error_type,
        )
        await self._commit(letter.source, letter.offset)

    async def _discard_producer(self) -> None:
        """Drop the DLQ producer: after a failed batch aiokafka's idempotent sequence is broken."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await producer.stop()
        except Exception:
            _LOG.warning("stopping the failed DLQ producer raised", exc_info=True)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({tp: offset + 1})
        except KafkaError:
            _LOG.error(
                "commit of %s[%d]@%d failed; it will be redelivered unless a later commit "
                "covers it", tp.topic, tp.partition, offset, exc_info=True,
            )
