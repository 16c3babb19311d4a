"""Topics read without a group (``tool.results``, ``conversation.replies``) dead-letter poison.

Every record that nobody can use lands in ``T.dlq`` exactly once, however many replicas tail
the topic, with its original bytes, the ``dlq.*`` headers and one ``dlq_events_total``; valid
records, also those for another instance or with a broken trace context, are never
dead-lettered and still reach every tail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from otel.dlq import DLQ_EVENTS_TOTAL, EventConsumer, InvalidEventError
from services.common.kafka import CONVERSATION_REPLIES, TOOL_RESULTS, TopicTail, partition_ids
from tests import live
from tests.kafka.conftest import (
    BOOTSTRAP,
    RecordingHandler,
    Telemetry,
    Topics,
    new_group,
    read_topic,
    running,
    wait_until,
)
from tests.kafka.test_receive_spans import instrumented
from tests.services import kit

Headers = list[tuple[str, bytes]]
BAD_TRACEPARENT: Headers = [("traceparent", b"\xff\xfe not utf-8"), ("baggage", b"\xc3")]
PER_KIND = 2


@dataclass(frozen=True)
class Poison:
    """One kind of record nobody can use and the error type it is dead-lettered with."""

    value: bytes | None
    error_type: str
    headers: Headers | None = None


def poisons(missing: bytes, mistyped: bytes) -> dict[str, Poison]:
    """The poison kinds of a topic whose events need the fields ``missing`` lacks."""
    return {
        "not-utf8": Poison(b"\xff\xfe\x00\x81", "undecodable_event"),
        "not-json": Poison(b"{not json", "undecodable_event"),
        "tombstone": Poison(None, "undecodable_event"),
        "json-array": Poison(b"[1, 2, 3]", "invalid_event"),
        "json-number": Poison(b"42", "invalid_event"),
        "missing-fields": Poison(missing, "invalid_event"),
        "mistyped-fields": Poison(mistyped, "invalid_event"),
        "bad-trace-context": Poison(missing, "invalid_event", BAD_TRACEPARENT),
    }


def reply_event(session_id: str, text: str) -> dict[str, Any]:
    """A valid ``conversation.replies`` event for ``session_id``."""
    return {"session_id": session_id, "message_id": str(uuid.uuid4()),
            "reply_to": str(uuid.uuid4()), "status": "answered", "intent": "statement",
            "text": text, "trace_id": ""}


def tool_result_event(correlation_id: str) -> dict[str, Any]:
    """A valid ``tool.results`` event answering ``correlation_id``."""
    return {"correlation_id": correlation_id, "tool_name": "calculate", "status": "ok",
            "output": "1", "error_type": None, "error_message": None}


@dataclass(frozen=True)
class TailedTopic:
    """A topic read without a group, the service that guards it and its poison kinds."""

    topic: str
    job: str
    guard_group: str
    poisons: dict[str, Poison]
    foreign: Callable[[], dict[str, Any]]
    """A valid event that no running instance is waiting for."""


TAILED = {
    TOOL_RESULTS: TailedTopic(
        TOOL_RESULTS, "conversation-worker", "conversation-worker-dlq-guard",
        poisons(b'{"correlation_id": "c-1"}',
                b'{"correlation_id": 7, "tool_name": "calculate", "status": "ok"}'),
        lambda: tool_result_event(f"nobody-waits-{uuid.uuid4()}"),
    ),
    CONVERSATION_REPLIES: TailedTopic(
        CONVERSATION_REPLIES, "gateway", "gateway-dlq-guard",
        poisons(b'{"session_id": "' + str(uuid.uuid4()).encode() + b'"}',
                json.dumps(reply_event("not-a-uuid", "hi")).encode()),
        lambda: reply_event(str(uuid.uuid4()), "for a WebSocket elsewhere"),
    ),
}


async def end_offsets(topic: str) -> dict[TopicPartition, int]:
    """The current end offset of every partition of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partition_ids(BOOTSTRAP, topic)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def records_since(start: dict[TopicPartition, int]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record from ``start`` up to the current end of each of its partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(start))
        ends = await consumer.end_offsets(list(start))
        records: list[ConsumerRecord[bytes, bytes]] = []
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + 30
        while [tp for tp in start if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"reading {list(start)} timed out"
            batches = await consumer.getmany(timeout_ms=500)
            for tp, batch in batches.items():
                records.extend(r for r in batch if r.offset < ends[tp])
        return records
    finally:
        await consumer.stop()


def ours(
    records: list[ConsumerRecord[bytes, bytes]], run: str
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records whose key starts with ``run``."""
    return [r for r in records if r.key is not None and r.key.startswith(run.encode())]


def header(record: ConsumerRecord[bytes, bytes], key: str) -> bytes | None:
    """The first header named ``key``."""
    return next((value for name, value in record.headers if name == key), None)


def dlq_selector(job: str, topic: str, error_type: str) -> str:
    """The PromQL selector of the service's ``dlq_events_total`` for ``topic``/``error_type``."""
    return (f'dlq_events_total{{job="{job}",source_topic="{topic}",'
            f'error_type="{error_type}"}}')


def settled_totals(selectors: list[str]) -> dict[str, float]:
    """The totals of ``selectors`` once none changed for 15 s (earlier writes exported)."""
    last = {s: live.prom_total(s) for s in selectors}
    since = time.monotonic()
    while time.monotonic() - since < 15:
        time.sleep(1)
        now = {s: live.prom_total(s) for s in selectors}
        if now != last:
            last, since = now, time.monotonic()
    return last


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("topic", list(TAILED))
async def test_every_poison_record_sent_to_a_tailed_topic_is_dead_lettered_once(
    topic: str, producer: AIOKafkaProducer
) -> None:
    """Poison of each kind sent by an external client lands in T.dlq once, unchanged, and
    counts once in dlq_events_total; valid records, even with a broken trace context or for no
    instance, are not dead-lettered and a real conversation with a tool call still answers."""
    tailed = TAILED[topic]
    run = f"tail-dlq-{uuid.uuid4().hex[:12]}"
    error_types = sorted({p.error_type for p in tailed.poisons.values()})
    selectors = {t: dlq_selector(tailed.job, topic, t) for t in error_types}
    before = settled_totals(list(selectors.values()))
    dlq_start = await end_offsets(f"{topic}.dlq")
    tenant_key = kit.create_tenant()[1]
    session = kit.create_session(tenant_key)

    sent: dict[bytes, Poison] = {}
    for kind, poison in tailed.poisons.items():
        for i in range(PER_KIND):
            key = f"{run}-{kind}-{i}".encode()
            await producer.send_and_wait(topic, poison.value, key=key, headers=poison.headers)
            sent[key] = poison
    valid = {f"{run}-valid-bad-trace".encode(): (tailed.foreign(), BAD_TRACEPARENT),
             f"{run}-valid-foreign".encode(): (tailed.foreign(), [])}
    for key, (event, headers) in valid.items():
        await producer.send_and_wait(topic, json.dumps(event).encode(), key=key,
                                     headers=headers)

    async with websockets.connect(f"ws://127.0.0.1:8010/v1/sessions/{session}/stream",
                                  additional_headers=kit.auth(tenant_key)) as ws:
        accepted = kit.post_message(tenant_key, session, "calculate 6*7")
        reply = json.loads(await asyncio.wait_for(ws.recv(), 90))
    assert reply["reply_to"] == accepted["message_id"]
    assert reply["status"] == "answered" and "calculate: 42" in reply["text"]

    dead = await wait_until(lambda: records_since(dlq_start),
                            lambda records: len(ours(records, run)) >= len(sent),
                            f"{len(sent)} records of {run} in {topic}.dlq", timeout=60)
    expected = Counter(p.error_type for p in sent.values())
    grown = live.wait_until(
        lambda: {t: live.prom_total(s) - before[s] for t, s in selectors.items()},
        lambda growth: growth == expected, 60, f"dlq_events_total of {topic} to grow by "
        f"{dict(expected)}",
    )
    assert grown == expected
    dead = ours(await records_since(dlq_start), run)  # after the export wait: no duplicates
    assert sorted(r.key for r in dead if r.key) == sorted(sent)
    for record in dead:
        assert record.key is not None
        poison = sent[record.key]
        assert record.value == poison.value
        assert header(record, "dlq.original.topic") == topic.encode()
        assert header(record, "dlq.error.type") == poison.error_type.encode()
        assert header(record, "dlq.consumer.group") == tailed.guard_group.encode()
        assert header(record, "dlq.error.message")
        assert list(record.headers[: len(poison.headers or [])]) == (poison.headers or [])


def require_id(event: dict[str, Any]) -> None:
    """Validator of the test topics: the event needs a string ``id``."""
    if not isinstance(event.get("id"), str):
        raise InvalidEventError("field 'id' must be a string")


async def test_two_replicas_dead_letter_each_poison_record_once_and_both_get_every_valid_one(
    topics: Topics, producer: AIOKafkaProducer
) -> None:
    """Two tails of one topic sharing a guard group: each valid record reaches both handlers,
    each poison record lands in T.dlq exactly once."""
    topic = await topics.create("tail", partitions=3)
    group = new_group()
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def collect(name: str) -> Callable[[dict[str, Any]], Any]:
        async def handle(event: dict[str, Any]) -> None:
            seen[name].append(event["id"])
        return handle

    tails = [TopicTail(topic, collect(name), validator=require_id, guard_group=group,
                       bootstrap=BOOTSTRAP, name=f"replica {name}") for name in seen]
    for tail in tails:
        await tail.start()
    try:
        poison = [b"\xff", b"[]", None, b'{"id": 5}', b"{}", b"7"] * 3
        valid = [f"v{i}" for i in range(9)]
        for i, value in enumerate(poison):
            await producer.send_and_wait(topic, value, key=f"p{i}".encode(), partition=i % 3)
        for i, ident in enumerate(valid):
            await producer.send_and_wait(topic, json.dumps({"id": ident}).encode(),
                                         partition=i % 3)
        await wait_until(lambda: seen, lambda s: all(len(v) == len(valid) for v in s.values()),
                         "every valid record at both replicas")
        dead = await wait_until(
            lambda: records_since({TopicPartition(topic + ".dlq", 0): 0}),
            lambda records: len(records) >= len(poison), f"{len(poison)} DLQ records")
    finally:
        for tail in tails:
            await tail.stop()

    assert sorted(seen["a"]) == sorted(seen["b"]) == sorted(valid)
    assert sorted(r.key for r in dead if r.key) == sorted(f"p{i}".encode()
                                                          for i in range(len(poison)))
    assert sorted((r.value is None, r.value or b"") for r in dead) == sorted(
        (v is None, v or b"") for v in poison)
    assert await records_since({TopicPartition(topic + ".dlq", 0): 0}) == dead


async def test_a_handler_failure_on_a_valid_record_is_logged_and_the_tail_goes_on(
    topics: Topics, producer: AIOKafkaProducer
) -> None:
    """A tail handler that raises is logged at ERROR with the record's trace id, the record is
    not dead-lettered, and the next record is delivered."""
    topic = await topics.create("tail-crash")
    delivered: list[str] = []

    async def handle(event: dict[str, Any]) -> None:
        if event["id"] == "crash":
            raise RuntimeError("handler bug")
        delivered.append(event["id"])

    logs = RecordingHandler()
    logger = logging.getLogger("services.common.kafka")
    logger.addHandler(logs)
    tail = TopicTail(topic, handle, validator=require_id, guard_group=new_group(),
                     bootstrap=BOOTSTRAP, name="crashing tail")
    await tail.start()
    traceparent = b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01"
    try:
        await producer.send_and_wait(topic, b'{"id": "crash"}',
                                     headers=[("traceparent", traceparent)])
        await producer.send_and_wait(topic, b'{"id": "after"}')
        await wait_until(lambda: delivered, lambda d: d == ["after"], "the next record")
    finally:
        await tail.stop()
        logger.removeHandler(logs)

    (failure,) = [r for r in logs.records if r.levelname == "ERROR"]
    assert failure.getMessage() == (f"crashing tail handler failed on {topic}[0]@0; not retried; "
                                    f"trace_id={'ab' * 16}")
    assert failure.exc_info is not None and failure.exc_info[0] is RuntimeError
    assert await records_since({TopicPartition(topic + ".dlq", 0): 0}) == []


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "contrib"])
async def test_a_guard_traces_only_the_records_it_dead_letters(
    lean: bool, topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """An EventConsumer without a handler commits a valid record with no span at all (not even
    the instrumentation's receive span) and dead-letters an invalid one in a kept process
    span, counted once."""
    topic = await topics.create("guard")
    group = new_group()
    await producer.send_and_wait(topic, b'{"id": "valid"}')
    await producer.send_and_wait(topic, b'{"id": 5}')
    guard = EventConsumer([topic], None, bootstrap_servers=BOOTSTRAP, group_id=group,
                          validator=require_id, tracer_provider=telemetry.tracer_provider,
                          meter_provider=telemetry.meter_provider)
    with instrumented(telemetry, lean):
        async with running(guard):
            await wait_until(lambda: topics.committed(group, topic), lambda offset: offset == 2,
                             "both offsets committed")

    (dead,) = await read_topic(topic + ".dlq")
    assert (dead.value, header(dead, "dlq.error.type")) == (b'{"id": 5}', b"invalid_event")
    (span,) = [s for s in telemetry.finished_spans() if s.name != f"{topic}.dlq send"]
    assert span.name == f"process {topic}"
    assert span.attributes is not None
    assert span.attributes["messaging.kafka.offset"] == 1
    assert span.attributes["messaging.consumer.group.name"] == group
    assert span.attributes["error.type"] == "invalid_event"
    assert span.attributes["soma.sampling.keep"] is True
    assert telemetry.counter(DLQ_EVENTS_TOTAL) == {
        (("error_type", "invalid_event"), ("source_topic", topic)): 1}
