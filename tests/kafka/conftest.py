"""Fixtures for the Kafka tests: the real broker, unique topics, in-memory telemetry.

The broker address comes from ``KAFKA_BOOTSTRAP`` (default ``127.0.0.1:9092``, the stack's).
An unreachable broker fails every test that needs it, naming Kafka; nothing is skipped.
Waiting is always polling against a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel import JsonFormatter
from otel.dlq import EventConsumer, Handler

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
HANDLER_LOGGER = "tests.kafka.handler"

T = TypeVar("T")


@overload
async def wait_until(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str,
    timeout: float = 30.0,
) -> T: ...


@overload
async def wait_until(
    probe: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 30.0,
) -> T: ...


async def wait_until(
    probe: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = 30.0,
) -> Any:
    """Poll ``probe()`` (sync or async) until ``done(value)``; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {value!r:.500}")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
async def kafka_admin() -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client of the real broker; fails loudly when Kafka is unreachable."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=15000)
    try:
        await admin.start()
        await admin.describe_cluster()
    except (KafkaError, OSError) as exc:
        await admin.close()
        pytest.fail(f"Kafka broker unreachable at {BOOTSTRAP} (KAFKA_BOOTSTRAP): {exc!r}")
    yield admin
    await admin.close()


@dataclass
class Topics:
    """Creates uniquely named topics (and their ``.dlq``) and deletes them afterwards."""

    admin: AIOKafkaAdminClient
    created: list[str] = field(default_factory=list)

    async def create(
        self, prefix: str, *, dlq: bool = True, dlq_configs: dict[str, str] | None = None,
        partitions: int = 1,
    ) -> str:
        """Create ``{prefix}-{uuid}`` (one partition unless told), and its one-partition
        ``.dlq`` unless told not to."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        new = [NewTopic(name, partitions, 1)]
        if dlq:
            new.append(NewTopic(name + ".dlq", 1, 1, topic_configs=dlq_configs or {}))
        await self.admin.create_topics(new)
        self.created.extend(topic.name for topic in new)
        return name

    async def committed(self, group: str, topic: str) -> int | None:
        """Return ``group``'s committed offset of ``topic``'s partition 0, or None."""
        offsets = await self.admin.list_consumer_group_offsets(group)
        found = offsets.get(TopicPartition(topic, 0))
        return None if found is None or found.offset < 0 else found.offset


@pytest.fixture
async def topics(kafka_admin: AIOKafkaAdminClient) -> AsyncIterator[Topics]:
    """A factory of unique topics, deleted at teardown."""
    made = Topics(kafka_admin)
    yield made
    if made.created:
        await kafka_admin.delete_topics(made.created)


@pytest.fixture
async def producer(kafka_admin: AIOKafkaAdminClient) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent ``acks=all`` producer without serialisers."""
    made = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True, acks="all")
    await made.start()
    yield made
    await made.stop()


async def read_topic(topic: str, timeout: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Return every record of ``topic`` (partition 0) present now, in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                pytest.fail(f"timed out reading {topic} up to offset {end}")
            batch = await consumer.getmany(tp, timeout_ms=500)
            records.extend(r for r in batch.get(tp, []) if r.offset < end)
        return records
    finally:
        await consumer.stop()


async def wait_for_records(topic: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Poll ``topic`` until it holds at least ``count`` records; return them all."""
    return await wait_until(
        lambda: read_topic(topic), lambda records: len(records) >= count,
        f"{count} record(s) in {topic}",
    )


@dataclass
class Telemetry:
    """SDK providers with in-memory exporters: what the code under test emitted."""

    spans: InMemorySpanExporter
    tracer_provider: TracerProvider
    metric_reader: InMemoryMetricReader
    meter_provider: MeterProvider
    logs: InMemoryLogRecordExporter

    def finished_spans(self) -> list[ReadableSpan]:
        """Return the ended spans in end order."""
        return list(self.spans.get_finished_spans())

    def log_records(self) -> list[ReadableLogRecord]:
        """Return the log records of the handler logger in emit order."""
        return list(self.logs.get_finished_logs())

    def counter(self, name: str) -> dict[tuple[tuple[str, Any], ...], int]:
        """Return the cumulative value of counter ``name`` per sorted attribute set."""
        values: dict[tuple[tuple[str, Any], ...], int] = {}
        data = self.metric_reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else []:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = tuple(sorted((point.attributes or {}).items()))
                        values[key] = int(point.value)  # type: ignore[union-attr]
        return values


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Fresh tracer, meter and logger providers; the handler logger feeds the log exporter."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    logs = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    handler = LoggingHandler(logger_provider=logger_provider)
    logger = logging.getLogger(HANDLER_LOGGER)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield Telemetry(spans, tracer_provider, reader, meter_provider, logs)
    logger.removeHandler(handler)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    logger_provider.shutdown()


class RecordingHandler(logging.Handler):
    """Keeps the ``logging`` records it receives (a real handler, attached to a real logger)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Store ``record``."""
        self.records.append(record)


@pytest.fixture
def consumer_logs() -> Iterator[RecordingHandler]:
    """The records logged by :mod:`otel.dlq.consumer` during the test."""
    handler = RecordingHandler()
    logger = logging.getLogger("otel.dlq.consumer")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@dataclass
class JsonLines:
    """Lines written by the library's :class:`otel.JsonFormatter` during the test."""

    stream: io.StringIO

    def parsed(self) -> list[dict[str, Any]]:
        """Return each line as a JSON object."""
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def json_lines() -> Iterator[JsonLines]:
    """JSON log lines of the handler logger and :mod:`otel.dlq.consumer`, formatted live."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("kafka-tests"))
    loggers = [logging.getLogger(HANDLER_LOGGER), logging.getLogger("otel.dlq.consumer")]
    for logger in loggers:
        logger.addHandler(handler)
    yield JsonLines(stream)
    for logger in loggers:
        logger.removeHandler(handler)


def new_group() -> str:
    """Return a unique consumer group id."""
    return f"test-group-{uuid.uuid4().hex[:12]}"


def worker(
    topics: list[str], handler: Handler, telemetry: Telemetry, *, group: str | None = None,
    **options: Any,
) -> EventConsumer:
    """Return an :class:`EventConsumer` on the test broker reporting to ``telemetry``."""
    return EventConsumer(
        topics, handler, bootstrap_servers=BOOTSTRAP, group_id=group or new_group(),
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
        **options,
    )


@asynccontextmanager
async def running(worker: EventConsumer) -> AsyncIterator[EventConsumer]:
    """Start ``worker`` and run it in a task; stop it and surface a crash on exit."""
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.stop()
        await task
