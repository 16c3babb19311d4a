"""Retries and dead-lettering on the real broker: exact records, headers, commits and counts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otel.dlq import (
    DLQ_EVENTS_TOTAL,
    FAILURE_HEADERS,
    Backoff,
    InvalidEventError,
    PermanentError,
    RetryableError,
    RetryPolicy,
)
from tests.kafka.conftest import (
    JsonLines,
    RecordingHandler,
    Telemetry,
    Topics,
    new_group,
    read_topic,
    running,
    wait_for_records,
    wait_until,
    worker,
)

FAST = RetryPolicy(max_attempts=3, backoff=Backoff(initial=0.01, maximum=0.05))
GOOD = b'{"ok": true}'


def require_session_id(event: dict[str, Any]) -> None:
    """Validator: the event needs a string ``session_id``."""
    if not isinstance(event.get("session_id"), str):
        raise ValueError("session_id must be a string")


@dataclass(frozen=True)
class Poison:
    """One kind of poison record and what its DLQ record must say."""

    value: bytes
    error: Callable[[], Exception] | None
    error_class: str
    error_type: str
    message: str
    attempts: int


POISONS = {
    "undecodable-bytes": Poison(b"\xff\x00{not json", None,
                                "otel.dlq.errors.UndecodableEventError", "undecodable_event",
                                "record value is not UTF-8 JSON", 1),
    "json-but-invalid-schema": Poison(b'{"session_id": 5, "poison": false}', None,
                                      "ValueError", "invalid_event",
                                      "session_id must be a string", 1),
    "json-not-an-object": Poison(b"[1, 2]", None, "otel.dlq.errors.InvalidEventError",
                                 "invalid_event", "event must be a JSON object, not list", 1),
    "permanent-error": Poison(b'{"session_id": "s", "poison": true}',
                              lambda: PermanentError("tool does not exist"),
                              "otel.dlq.errors.PermanentError", "permanent_error",
                              "tool does not exist", 1),
    "retryable-error-exhausted": Poison(b'{"session_id": "s", "poison": true}',
                                        lambda: RetryableError("SLM timed out",
                                                               error_type="slm_timeout"),
                                        "otel.dlq.errors.RetryableError", "slm_timeout",
                                        "SLM timed out", FAST.max_attempts),
    "unknown-exception-exhausted": Poison(b'{"session_id": "s", "poison": true}',
                                          lambda: KeyError("missing"), "KeyError", "KeyError",
                                          "'missing'", FAST.max_attempts),
}


def headers_dict(record: ConsumerRecord[bytes, bytes]) -> dict[str, bytes | None]:
    """Return the record's headers by key, failing on duplicate keys."""
    result = dict(record.headers)
    assert len(result) == len(record.headers), record.headers
    return result


@pytest.mark.parametrize("kind", list(POISONS))
async def test_each_poison_kind_reaches_the_dlq_with_exact_bytes_and_every_header(
    kind: str, topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """The DLQ record keeps key, value and headers byte for byte and adds every dlq.* header."""
    poison = POISONS[kind]
    topic = await topics.create(f"poison-{kind}")
    group = new_group()
    with telemetry.tracer_provider.get_tracer("tests").start_as_current_span("producer") as p:
        producer_ctx = p.get_span_context()
    traceparent = (f"00-{trace.format_trace_id(producer_ctx.trace_id)}-"
                   f"{trace.format_span_id(producer_ctx.span_id)}-01").encode()
    original_headers = [("traceparent", traceparent), ("x-binary", b"\x00\xff\x01"),
                        ("x-null", None)]
    before_ms = time.time_ns() // 1_000_000
    poisoned = await producer.send_and_wait(topic, poison.value, key=b"key-\xfe",
                                            headers=original_headers)
    await producer.send_and_wait(topic, b'{"session_id": "s", "poison": false}', key=b"good")
    calls: list[bytes] = []

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        calls.append(record.key)
        if event.get("poison") and poison.error is not None:
            raise poison.error()

    async with running(worker([topic], handle, telemetry, group=group,
                              validator=require_session_id, retry=FAST)):
        await wait_until(lambda: topics.committed(group, topic), lambda offset: offset == 2,
                         "both offsets committed")
    after_ms = time.time_ns() // 1_000_000

    handler_runs = poison.attempts if poison.error is not None else 0
    assert calls == [b"key-\xfe"] * handler_runs + [b"good"]
    (dead,) = await read_topic(topic + ".dlq")
    assert dead.key == b"key-\xfe"
    assert dead.value == poison.value
    assert list(dead.headers[: len(original_headers)]) == original_headers
    assert [key for key, _ in dead.headers[len(original_headers):]] == list(FAILURE_HEADERS)
    headers = headers_dict(dead)
    (process,) = [span for span in telemetry.finished_spans() if span.name == f"process {topic}"
                  and span.attributes and span.attributes["messaging.kafka.offset"] == 0]
    assert process.context is not None
    assert {key: headers[key] for key in FAILURE_HEADERS
            if key not in {"dlq.error.stacktrace", "dlq.first.failure", "dlq.last.failure"}} == {
        "dlq.original.topic": topic.encode(),
        "dlq.original.partition": b"0",
        "dlq.original.offset": str(poisoned.offset).encode(),
        "dlq.original.timestamp": str(poisoned.timestamp).encode(),
        "dlq.consumer.group": group.encode(),
        "dlq.error.class": poison.error_class.encode(),
        "dlq.error.type": poison.error_type.encode(),
        "dlq.error.message": headers["dlq.error.message"],
        "dlq.attempts": str(poison.attempts).encode(),
        "dlq.trace.id": trace.format_trace_id(producer_ctx.trace_id).encode(),
    }
    assert (headers["dlq.error.message"] or b"").decode().startswith(poison.message)
    stack = (headers["dlq.error.stacktrace"] or b"").decode()
    assert stack.startswith("Traceback (most recent call last):")
    assert poison.error_class.rsplit(".", 1)[-1] in stack
    first = int(headers["dlq.first.failure"] or b"0")
    last = int(headers["dlq.last.failure"] or b"0")
    assert before_ms <= first <= last <= after_ms

    assert process.context.trace_id == producer_ctx.trace_id
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes is not None
    assert process.attributes["error.type"] == poison.error_type
    assert process.attributes["soma.sampling.keep"] is True
    assert [event.name for event in process.events] == (
        ["retry"] * (poison.attempts - 1) + ["exception"])
    assert telemetry.counter(DLQ_EVENTS_TOTAL) == {
        (("error_type", poison.error_type), ("source_topic", topic)): 1}


async def test_a_retryable_error_that_recovers_is_processed_once_without_dlq(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """Two retryable failures then success: three attempts, committed, nothing dead-lettered."""
    topic = await topics.create("recovers")
    group = new_group()
    await producer.send_and_wait(topic, b'{"session_id": "s"}')
    attempts: list[int] = []

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        attempts.append(record.offset)
        if len(attempts) < 3:
            raise RetryableError("busy")

    async with running(worker([topic], handle, telemetry, group=group, retry=FAST)):
        await wait_until(lambda: topics.committed(group, topic), lambda offset: offset == 1,
                         "the commit")

    assert attempts == [0, 0, 0]
    assert await read_topic(topic + ".dlq") == []
    assert telemetry.counter(DLQ_EVENTS_TOTAL) == {}
    (process,) = telemetry.finished_spans()
    assert process.status.status_code is StatusCode.UNSET
    assert [event.name for event in process.events] == ["retry", "retry"]


@pytest.mark.parametrize("failure", ["dlq-rejects-record-size", "dlq-topic-missing"])
async def test_a_failing_dlq_write_blocks_the_partition_until_recovery_then_delivers_once(
    failure: str, topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer,
    kafka_admin: AIOKafkaAdminClient, consumer_logs: RecordingHandler, json_lines: JsonLines,
) -> None:
    """The broker refuses the DLQ write: no commit, no progress, ERROR logs; fixed: one record."""
    if failure == "dlq-rejects-record-size":
        topic = await topics.create("blocked", dlq_configs={"max.message.bytes": "1024"})
        expected_error = "MessageSizeTooLargeError"
    else:
        topic = await topics.create("blocked", dlq=False)
        expected_error = "UnknownTopicOrPartitionError"
    group = new_group()
    poison = b"\xff" * 4000
    await producer.send_and_wait(topic, poison, key=b"big")
    await producer.send_and_wait(topic, GOOD, key=b"good")
    handled: list[bytes] = []

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        handled.append(record.key)

    def dlq_errors() -> list[logging.LogRecord]:
        return [r for r in consumer_logs.records
                if r.levelname == "ERROR" and r.getMessage().startswith("DLQ write")]

    async with running(worker([topic], handle, telemetry, group=group,
                              dlq_backoff=Backoff(0.05, 0.2),
                              producer_config={"request_timeout_ms": 1000})):
        await wait_until(dlq_errors, lambda errors: len(errors) >= 3, "three failed DLQ writes")
        assert await topics.committed(group, topic) is None
        assert handled == []
        assert telemetry.counter(DLQ_EVENTS_TOTAL) == {}
        if failure == "dlq-rejects-record-size":
            assert await read_topic(topic + ".dlq") == []
            await kafka_admin.alter_configs([ConfigResource(
                ConfigResourceType.TOPIC, topic + ".dlq",
                configs={"max.message.bytes": "1048576"})])
        else:
            await kafka_admin.create_topics([NewTopic(topic + ".dlq", 1, 1)])
            topics.created.append(topic + ".dlq")
        await wait_until(lambda: topics.committed(group, topic), lambda offset: offset == 2,
                         "both offsets committed after recovery")

    (dead,) = await read_topic(topic + ".dlq")
    assert (dead.key, dead.value) == (b"big", poison)
    assert headers_dict(dead)["dlq.error.type"] == b"undecodable_event"
    assert handled == [b"good"]
    assert telemetry.counter(DLQ_EVENTS_TOTAL) == {
        (("error_type", "undecodable_event"), ("source_topic", topic)): 1}
    trace_id = (headers_dict(dead)["dlq.trace.id"] or b"").decode()
    errors = dlq_errors()
    assert all(r.getMessage().endswith(f"trace_id={trace_id}") for r in errors)
    error_lines = [line for line in json_lines.parsed() if line["level"] == "ERROR"]
    assert len(error_lines) == len(errors)
    assert {line["trace_id"] for line in error_lines} == {trace_id}
    assert {type(r.exc_info[1]).__name__ for r in errors if r.exc_info} == {expected_error}


async def test_interleaved_poison_is_dead_lettered_and_good_records_handled_once_counts_exact(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """Interleaved good and poison records: every good one handled once, counts exact per type."""
    topic = await topics.create("mixed")
    group = new_group()
    values = [GOOD, b"\x00", GOOD, b'{"poison": "permanent"}', b"{", GOOD,
              b'{"poison": "invalid"}']
    for value in values:
        await producer.send_and_wait(topic, value)
    handled: list[int] = []

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        if event.get("poison") == "permanent":
            raise PermanentError("no")
        if event.get("poison") == "invalid":
            raise InvalidEventError("bad field")
        handled.append(record.offset)

    async with running(worker([topic], handle, telemetry, group=group, retry=FAST)):
        await wait_until(lambda: topics.committed(group, topic),
                         lambda offset: offset == len(values), "all offsets committed")

    assert handled == [0, 2, 5]
    dead = await wait_for_records(topic + ".dlq", 4)
    assert [record.value for record in dead] == [b"\x00", b'{"poison": "permanent"}', b"{",
                                                 b'{"poison": "invalid"}']
    assert telemetry.counter(DLQ_EVENTS_TOTAL) == {
        (("error_type", "undecodable_event"), ("source_topic", topic)): 2,
        (("error_type", "permanent_error"), ("source_topic", topic)): 1,
        (("error_type", "invalid_event"), ("source_topic", topic)): 1,
    }
