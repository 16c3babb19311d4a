"""Kafka (issue 7, item 4): per-message cost of trace-context propagation; DLQ throughput.

Propagation
-----------
N JSON events (~200 bytes) are produced one at a time, each awaiting the broker's ack (acks=all,
idempotent producer: what :func:`otel.kafka.send_event` does), then consumed with ``getone()``
from the same single-partition topic. Two variants, run alternately in two rounds so drift on
the shared machine hits both:

* **plain**: ``producer.send_and_wait(topic, json.dumps(event).encode())``; consume =
  ``json.loads``.
* **propagated**: as in the services: the aiokafka instrumentation that
  :func:`otel.configure` leaves in place (:class:`otel._aiokafka.AiokafkaInstrumentor`:
  ``send`` and ``receive`` spans), each send inside a ``bench.request`` span, through
  ``send_event`` (headers + body ``trace_context``); each consumed record inside
  ``process_span`` (context extracted, CONSUMER span). Spans go to an SDK
  ``TracerProvider`` with the span export that :func:`otel.configure` installs
  (``otel._otlp.EncodingBatchSpanProcessor`` and its OTLP/gRPC exporter) to the shared
  collector (127.0.0.1:4317, ``service.name=bench-kafka``).

Figures: wall time and CPU time (``time.process_time``, the bench process only, so the
exporter's thread included) per message, produce and consume, propagated / plain. CPU per
message is the cost figure; wall per message is dominated by the broker round trip.

DLQ throughput
--------------
M records to a 3-partition topic, 10% poison of four kinds (not JSON, a JSON array, failing
the validator, handler raising ``PermanentError``), consumed by :class:`otel.dlq.EventConsumer`
(records one at a time, commit per record, each poison written to ``T.dlq`` with the
acks=all producer before its commit). Messages/s = M / time from ``run()`` to the last record
handled or dead-lettered. Then the whole ``T.dlq`` is read back and counts are checked
exactly: every poison record in ``T.dlq`` once, nothing else there, every good record handled
once (zero loss). Baseline: a plain aiokafka loop with the same semantics (``getone``, decode,
the same validation, poison forwarded to ``T.dlq`` with ``send_and_wait``, commit per record),
no spans. Topics are created per run (auto creation is off) and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from bench.common import KAFKA, Context, Row, Section, timed
from otel._aiokafka import AiokafkaInstrumentor
from otel._otlp import EncodingBatchSpanProcessor, SpanExporter
from otel.dlq import EventConsumer, InvalidEventError, PermanentError, dlq_topic
from otel.kafka import process_span, send_event

POISON_EVERY = 10


def provider() -> TracerProvider:
    """SDK provider exporting to the shared collector in batches, as otel.configure() does."""
    tp = TracerProvider(resource=Resource.create({"service.name": "bench-kafka",
                                                  "service.version": "bench"}))
    tp.add_span_processor(EncodingBatchSpanProcessor(SpanExporter(endpoint="127.0.0.1:4317",
                                                                  insecure=True)))
    return tp


async def create_topics(names: dict[str, int]) -> None:
    """Create the topics (name -> partitions) and wait until the broker's metadata lists
    every one of them with all its partitions (a fresh broker answers the create before)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=p, replication_factor=1)
                                   for n, p in names.items()], timeout_ms=15000)
        deadline = time.monotonic() + 30
        while True:
            described = await admin.describe_topics(list(names))
            ready = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
            if all(ready.get(n) == p for n, p in names.items()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics not in the broker's metadata after 30 s: {ready}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def delete_topics(names: list[str]) -> None:
    """Delete the run's topics (best effort)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.delete_topics(names, timeout_ms=15000)
    except Exception:  # cleanup only
        pass
    finally:
        await admin.close()


def event(i: int) -> dict[str, Any]:
    """A conversation-like event of about 200 bytes."""
    return {"session_id": f"s-{i % 50}", "message_id": f"m-{i}", "tenant": "bench",
            "text": "hello from the benchmark " * 4, "seq": i}


def new_producer() -> AIOKafkaProducer:
    """Idempotent, acks=all, bytes in and out (the services' producer)."""
    return AIOKafkaProducer(bootstrap_servers=KAFKA, enable_idempotence=True, acks="all")


async def produce(topic: str, n: int, start: int, tp: TracerProvider | None) -> tuple[float, float]:
    """Produce ``n`` events; (wall, cpu) seconds."""
    producer = new_producer()
    await producer.start()
    tracer = tp.get_tracer("bench") if tp else None
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(start, start + n):
            if tracer is None:
                await producer.send_and_wait(topic, json.dumps(event(i)).encode(),
                                             key=f"s-{i % 50}".encode())
            else:
                with tracer.start_as_current_span("bench.request"):
                    await send_event(producer, topic, event(i), key=f"s-{i % 50}")
        return time.perf_counter() - w0, time.process_time() - c0
    finally:
        await producer.stop()


async def consume(topic: str, n: int, offset: int,
                  tp: TracerProvider | None) -> tuple[float, float]:
    """Consume ``n`` records from ``offset`` of partition 0; (wall, cpu) seconds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    await consumer.start()
    part = TopicPartition(topic, 0)
    consumer.assign([part])
    consumer.seek(part, offset)
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            record = await asyncio.wait_for(consumer.getone(), 30)
            body = json.loads(record.value)
            if tp is not None:
                with process_span(record, consumer_group="bench", body=body,
                                  tracer_provider=tp):
                    pass
        return time.perf_counter() - w0, time.process_time() - c0
    finally:
        await consumer.stop()


@contextlib.contextmanager
def kafka_spans(tp: TracerProvider | None) -> Iterator[None]:
    """The services' aiokafka instrumentation reporting to ``tp``; nothing when it is None."""
    if tp is None:
        yield
        return
    instrumentor = AiokafkaInstrumentor()
    instrumentor.instrument(tracer_provider=tp)
    try:
        yield
    finally:
        instrumentor.uninstrument()


async def propagation(ctx: Context, sec: Section) -> None:
    """Plain vs propagated produce and consume, two alternating rounds each."""
    n = 200 if ctx.smoke else 1500
    topic = f"bench.propagation.{uuid.uuid4().hex[:8]}"
    await create_topics({topic: 1})
    tp = provider()
    totals: dict[str, list[float]] = {k: [0.0, 0.0] for k in
                                      ("plain-p", "prop-p", "plain-c", "prop-c")}
    try:
        offset = 0
        with kafka_spans(tp):  # warm-up: connections, exporter, imports
            await produce(topic, 50, 0, tp)
            await consume(topic, 50, 0, tp)
        offset = 50
        for _ in range(2):
            for label, provider_ in (("plain", None), ("prop", tp)):
                with kafka_spans(provider_):
                    w, c = await produce(topic, n // 2, offset, provider_)
                    totals[f"{label}-p"][0] += w
                    totals[f"{label}-p"][1] += c
                    w, c = await consume(topic, n // 2, offset, provider_)
                    totals[f"{label}-c"][0] += w
                    totals[f"{label}-c"][1] += c
                offset += n // 2
        tp.force_flush(10_000)
    finally:
        tp.shutdown()
        await delete_topics([topic])
    per = {k: (v[0] / n * 1e6, v[1] / n * 1e6) for k, v in totals.items()}
    for side, what in (("p", "produce (send + ack)"), ("c", "consume (getone + decode)")):
        sec.rows.append(Row(f"CPU per message, {what}, with propagation", per[f"prop-{side}"][1],
                            "us", per[f"plain-{side}"][1], "plain aiokafka, same run"))
        sec.rows.append(Row(f"wall per message, {what}, with propagation",
                            per[f"prop-{side}"][0], "us", per[f"plain-{side}"][0],
                            "plain aiokafka, same run"))
    added = (per["prop-p"][1] + per["prop-c"][1]) - (per["plain-p"][1] + per["plain-c"][1])
    sec.notes.append(
        f"Propagation: {n} messages per variant (two alternating rounds of {n // 2}). "
        f"The propagated variant adds {added:.0f} us of CPU per message end to end "
        "(parent span, send span, inject and JSON trace_context on produce; receive span, "
        "extract and process span on consume; span export by the library's encoding batch "
        "processor). Per-message wall time is the broker round trip of an acks=all send "
        "awaited one at a time, the same in both.")


def poison_value(i: int) -> bytes:
    """The i-th record's value: every POISON_EVERY-th is poison, of four kinds in turn."""
    if i % POISON_EVERY:
        return json.dumps(event(i)).encode()
    kind = (i // POISON_EVERY) % 4
    if kind == 0:
        return b"\xff not json " + str(i).encode()
    if kind == 1:
        return json.dumps([i, "a json array"]).encode()
    if kind == 2:
        return json.dumps({"message_id": f"m-{i}", "seq": i}).encode()   # no session_id
    return json.dumps({**event(i), "permanent": True}).encode()


def validate(ev: dict[str, Any]) -> None:
    """The benchmark's validator: a session_id string is required."""
    if not isinstance(ev.get("session_id"), str):
        raise InvalidEventError("session_id must be a string")


async def fill(topic: str, m: int) -> set[bytes]:
    """Write the M records (pipelined sends, acks=all); return the poison values."""
    producer = new_producer()
    await producer.start()
    try:
        futures = [await producer.send(topic, poison_value(i), key=f"k{i % 30}".encode())
                   for i in range(m)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {poison_value(i) for i in range(0, m, POISON_EVERY)}


async def read_all(topic: str, partitions: int) -> list[bytes]:
    """Every record value of ``topic`` (all partitions, from the beginning to the end)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        async def behind() -> bool:
            return any([await consumer.position(p) < ends[p] for p in parts])

        while await behind():
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {topic} to its end")
            batch = await consumer.getmany(timeout_ms=1000)
            values += [r.value for records in batch.values() for r in records]
        return values
    finally:
        await consumer.stop()


async def wait_until(done: Callable[[], bool], timeout: float) -> None:
    """Poll ``done`` every 10 ms until true; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("DLQ benchmark did not finish in time")
        await asyncio.sleep(0.01)


async def dlq_library(topic: str, m: int, tp: TracerProvider) -> tuple[float, Counter[str]]:
    """EventConsumer over the topic; (seconds, handled counts by message_id)."""
    handled: Counter[str] = Counter()

    async def handler(ev: dict[str, Any], _record: Any) -> None:
        if ev.get("permanent"):
            raise PermanentError("the benchmark's permanent failure")
        handled[ev["message_id"]] += 1

    group = f"bench-dlq-{uuid.uuid4().hex[:8]}"
    worker = EventConsumer([topic], handler, bootstrap_servers=KAFKA, group_id=group,
                           validator=validate, tracer_provider=tp)
    await worker.start()
    expected_good = m - len(range(0, m, POISON_EVERY))
    t0 = time.perf_counter()
    task = asyncio.create_task(worker.run())
    try:
        # Done when every good record was handled and every record's offset is committed
        # (a poison record is committed only after its DLQ write was acknowledged).
        await wait_until(lambda: sum(handled.values()) >= expected_good, 300)
        await wait_committed(group, topic, m)
        elapsed = time.perf_counter() - t0
    finally:
        await worker.stop()
        await task
    return elapsed, handled


async def wait_committed(group: str, topic: str, m: int, partitions: int = 3) -> None:
    """Wait until ``group``'s committed offsets on ``topic`` add up to ``m`` (every record)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        deadline = time.monotonic() + 300
        while True:
            offsets = await admin.list_consumer_group_offsets(group)
            total = sum(meta.offset for tp, meta in offsets.items()
                        if tp.topic == topic and meta.offset > 0)
            if total >= m:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"group {group} committed {total} of {m}")
            await asyncio.sleep(0.02)
    finally:
        await admin.close()


async def dlq_plain(topic: str, m: int) -> float:
    """The baseline loop (module docstring); seconds for all M records."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=KAFKA, enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                group_id=f"bench-plain-{uuid.uuid4().hex[:8]}")
    producer = new_producer()
    await consumer.start()
    await producer.start()
    handled = 0
    try:
        t0 = time.perf_counter()
        for _ in range(m):
            record = await asyncio.wait_for(consumer.getone(), 30)
            poison = False
            try:
                ev = json.loads(record.value)
                if not isinstance(ev, dict):
                    raise InvalidEventError("not an object")
                validate(ev)
                if ev.get("permanent"):
                    raise PermanentError("permanent")
                handled += 1
            except (ValueError, InvalidEventError, PermanentError):
                poison = True
            if poison:
                await producer.send_and_wait(f"{topic}.plain-dlq", record.value, key=record.key)
            part = TopicPartition(record.topic, record.partition)
            await consumer.commit({part: record.offset + 1})
        return time.perf_counter() - t0
    finally:
        await consumer.stop()
        await producer.stop()


async def dlq(ctx: Context, sec: Section) -> None:
    """DLQ throughput with poison, counts checked exactly, against the plain loop."""
    m = 300 if ctx.smoke else 2000
    topic = f"bench.dlq.{uuid.uuid4().hex[:8]}"
    names = {topic: 3, dlq_topic(topic): 3, f"{topic}.plain-dlq": 3}
    await create_topics(names)
    tp = provider()
    try:
        poison = await fill(topic, m)
        plain_s = await dlq_plain(topic, m)
        lib_s, handled = await dlq_library(topic, m, tp)
        tp.force_flush(10_000)
        dead = await read_all(dlq_topic(topic), 3)
        plain_dead = await read_all(f"{topic}.plain-dlq", 3)
    finally:
        tp.shutdown()
        await delete_topics(list(names))
    good_ids = {f"m-{i}" for i in range(m) if i % POISON_EVERY}
    problems = []
    if Counter(dead) != Counter(poison):
        problems.append(f"T.dlq holds {len(dead)} records, {len(set(dead) & poison)} of the "
                        f"{len(poison)} poison values; each expected exactly once")
    if set(handled) != good_ids or any(c != 1 for c in handled.values()):
        problems.append(f"handled {len(handled)} distinct good records of {len(good_ids)}, "
                        f"{sum(1 for c in handled.values() if c != 1)} more than once")
    if Counter(plain_dead) != Counter(poison):
        problems.append("the baseline loop's DLQ does not hold exactly the poison records")
    if problems:
        raise RuntimeError("DLQ counts wrong: " + "; ".join(problems))
    sec.rows.append(Row("DLQ consumer throughput, 10% poison, zero loss (EventConsumer)",
                        m / lib_s, "msg/s", m / plain_s,
                        "plain aiokafka loop, same semantics, no spans"))
    sec.notes.append(
        f"DLQ: {m} records on 3 partitions, {len(poison)} poison (four kinds in turn). Counts "
        f"checked exactly after the run: {len(dead)} records in T.dlq = the {len(poison)} "
        f"poison values, each once; {len(handled)} good records handled, each once. Both "
        "loops commit every record and await each DLQ write's ack (acks=all), so throughput "
        "is bounded by one broker round trip per record; EventConsumer adds a process span, "
        "the DLQ headers (with stack trace) and the dlq_events_total counter.")


async def main(ctx: Context, sec: Section) -> None:
    """Both parts."""
    await propagation(ctx, sec)
    await dlq(ctx, sec)


def run(ctx: Context) -> Section:
    """Run the Kafka benchmarks."""
    sec = Section("kafka", "Kafka: context propagation cost and DLQ throughput")
    logging.getLogger("otel.dlq").setLevel(logging.ERROR)  # one warning per poison otherwise
    with timed(sec):
        asyncio.run(main(ctx, sec))
    sec.commands.append(".venv/bin/python -m bench --only kafka")
    return sec
