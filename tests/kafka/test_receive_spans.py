"""Consumer ``receive`` spans of otel._aiokafka on the real broker: the contrib
instrumentation's spans for ``getone`` and ``getmany``, and a malformed header never stops the
consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel import _aiokafka
from otel.kafka import TRACE_CONTEXT_INVALID_TOTAL, send_event
from tests.kafka.conftest import (
    BOOTSTRAP,
    Telemetry,
    Topics,
    new_group,
    running,
    wait_until,
    worker,
)

GROUP = "receive-spans"
MESSAGE_ID, COUNT = "messaging.message.id", "messaging.batch.message_count"
#: Per record: key, and whether it goes through send_event (a send span, traceparent header).
RECORDS = [(f"k-{n}".encode(), True) for n in range(6)] + [(None, False), (b"\xff\x00", False)]

#: name, kind, parent (its name when known, else its span id), sorted attributes
Shape = tuple[str, SpanKind, str | int | None, tuple[tuple[str, Any], ...]]


@contextmanager
def instrumented(telemetry: Telemetry, lean: bool) -> Iterator[None]:
    """The contrib aiokafka instrumentation, with the library's lean wrappers if ``lean``."""
    instrumentor = AIOKafkaInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    if lean:
        assert _aiokafka.replace_contrib(telemetry.tracer_provider)
    try:
        yield
    finally:
        _aiokafka.restore_contrib()
        instrumentor.uninstrument()


@asynccontextmanager
async def from_start(topic: str, partitions: int) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of group GROUP assigned every partition of ``topic``, at offset 0."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=GROUP,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        for tp in assigned:
            consumer.seek(tp, 0)
        yield consumer
    finally:
        await consumer.stop()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a dict."""
    return dict(span.attributes or {})


def shape(span: ReadableSpan, names: dict[int, str]) -> Shape:
    """The span as the contrib and the lean wrappers must make it alike."""
    parent = None if span.parent is None else names.get(span.parent.span_id, span.parent.span_id)
    return span.name, span.kind, parent, tuple(sorted(attributes(span).items()))


async def produce(topic: str, telemetry: Telemetry, producer: AIOKafkaProducer) -> dict[int, str]:
    """RECORDS over two partitions (record n to partition n % 2), the keyed ones through
    send_event under a root span each; the names of the spans that made."""
    tracer = telemetry.tracer_provider.get_tracer("tests")
    with instrumented(telemetry, lean=True):
        for n, (key, traced) in enumerate(RECORDS):
            if traced:
                with tracer.start_as_current_span(f"root-{n}"):
                    await send_event(producer, topic, {"n": n}, key=key, partition=n % 2)
    for n, (key, traced) in enumerate(RECORDS):
        if not traced:
            await producer.send_and_wait(topic, b'{"n": %d}' % n, key=key, partition=n % 2)
    return {s.context.span_id: s.name for s in telemetry.finished_spans()}


async def consume(topic: str, telemetry: Telemetry, lean: bool,
                  read: Callable[[AIOKafkaConsumer], Awaitable[int]]) -> list[ReadableSpan]:
    """The spans that reading all of RECORDS with ``read`` made, instrumented as told."""
    before = len(telemetry.finished_spans())
    with instrumented(telemetry, lean):
        async with from_start(topic, 2) as consumer:
            seen = 0
            while seen < len(RECORDS):
                seen += await read(consumer)
    return telemetry.finished_spans()[before:]


async def one(consumer: AIOKafkaConsumer) -> int:
    """Read one record with getone."""
    await consumer.getone()
    return 1


async def batch(consumer: AIOKafkaConsumer) -> int:
    """Read a batch with getmany; its size."""
    records = await consumer.getmany(timeout_ms=1000)
    return sum(len(r) for r in records.values())


async def test_lean_getone_receive_spans_equal_the_contribs(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """getone: one receive span per record, child of its send span (else a root), with the
    contrib's name, kind and attribute map: keyed, keyless and non-UTF-8 keys alike."""
    topic = await topics.create("receive-one", partitions=2)
    names = await produce(topic, telemetry, producer)
    contrib = [shape(s, names) for s in await consume(topic, telemetry, False, one)]
    lean = [shape(s, names) for s in await consume(topic, telemetry, True, one)]
    assert sorted(lean, key=repr) == sorted(contrib, key=repr)
    assert [parent for _, _, parent, _ in lean].count(f"{topic} send") == 6
    found = [dict(s[3]) for s in lean]
    assert sorted(a[MESSAGE_ID] for a in found) == sorted(
        f"{topic}.{n % 2}.{n // 2}" for n in range(len(RECORDS)))
    assert sorted(a.get("messaging.kafka.message.key", "-") for a in found) == sorted(
        ["-", "b'\\xff\\x00'"] + [f"k-{n}" for n in range(6)])
    assert {a["messaging.consumer.group.name"] for a in found} == {GROUP}


def batch_shapes(spans: list[ReadableSpan], names: dict[int, str]
                 ) -> tuple[list[Shape], list[Shape], int]:
    """getmany's spans: the records' receive spans, the partition spans without their record
    count (each links exactly its records' receive spans), and the records counted by the
    batch spans."""
    names = names | {s.context.span_id: s.name for s in spans}
    records = [s for s in spans if MESSAGE_ID in attributes(s)]
    received = {s.context.span_id for s in records}
    polls = [s for s in spans if s.parent is None and s not in records]
    partitions = [s for s in spans if s not in records and s not in polls]
    for span in partitions:
        assert len(span.links) == attributes(span)[COUNT]
        assert {link.context.span_id for link in span.links} <= received
    without_count = {(*shape(s, names)[:3], tuple(kv for kv in shape(s, names)[3]
                                                  if kv[0] != COUNT)) for s in partitions}
    return (sorted((shape(s, names) for s in records), key=repr),
            sorted(without_count, key=repr), sum(attributes(s)[COUNT] for s in polls))


async def test_lean_getmany_spans_equal_the_contribs(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """getmany: a batch span, a span per partition linking its records' receive spans, and
    the receive spans, as the contrib makes them (however the broker splits the batches)."""
    topic = await topics.create("receive-many", partitions=2)
    names = await produce(topic, telemetry, producer)
    contrib = batch_shapes(await consume(topic, telemetry, False, batch), names)
    lean = batch_shapes(await consume(topic, telemetry, True, batch), names)
    assert lean == contrib
    records, partitions, counted = lean
    assert (len(records), len(partitions), counted) == (len(RECORDS), 2, len(RECORDS))
    assert [parent for _, _, parent, _ in records].count(None) == 2  # no headers: a root


async def test_a_header_the_contrib_getter_chokes_on_never_stops_the_consumer(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """Records whose traceparent or baggage is not UTF-8 (where the contrib's getone raises)
    are received, handled in new traces, counted and committed, with the lean getone."""
    topic = await topics.create("bad-header")
    await producer.send_and_wait(topic, b'{"n": 0}', headers=[("traceparent", b"\xff\xfe")])
    await producer.send_and_wait(topic, b'{"n": 1}', headers=[("baggage", b"\xff")])
    await producer.send_and_wait(topic, b'{"n": 2}')
    with instrumented(telemetry, lean=False):
        async with from_start(topic, 1) as consumer:
            with pytest.raises(UnicodeDecodeError):
                await consumer.getone()  # the contrib's getter: why getone is replaced
    handled: list[int] = []

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        handled.append(event["n"])

    group = new_group()
    with instrumented(telemetry, lean=True):
        async with running(worker([topic], handle, telemetry, group=group)):
            await wait_until(lambda: topics.committed(group, topic), lambda offset: offset == 3,
                             "three commits")
    assert handled == [0, 1, 2]
    receives = [s for s in telemetry.finished_spans() if s.name == f"{topic} receive"]
    assert [(s.parent, dict(s.attributes or {})["messaging.kafka.message.offset"])
            for s in receives] == [(None, 0), (None, 1), (None, 2)]
    assert telemetry.counter(TRACE_CONTEXT_INVALID_TOTAL) == {
        (("reason", "not_utf8"), ("source", "header")): 1,  # the baggage-only record: missing
        (("reason", "missing"), ("source", "none")): 2}
