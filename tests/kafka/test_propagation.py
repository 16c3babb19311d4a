"""Trace context across the real broker: headers, body, process spans, handler logs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Span, SpanKind

from otel import _aiokafka
from otel.kafka import TRACE_CONTEXT_INVALID_TOTAL, send_event
from tests.kafka.conftest import (
    BOOTSTRAP,
    HANDLER_LOGGER,
    JsonLines,
    Telemetry,
    Topics,
    new_group,
    read_topic,
    running,
    wait_until,
    worker,
)

log = logging.getLogger(HANDLER_LOGGER)


def traceparent_of(span: Span | ReadableSpan) -> str:
    """Return the W3C traceparent naming ``span``."""
    ctx = span.get_span_context()
    assert ctx is not None
    ids = f"{trace.format_trace_id(ctx.trace_id)}-{trace.format_span_id(ctx.span_id)}"
    return f"00-{ids}-{ctx.trace_flags:02x}"


def header_values(record: ConsumerRecord[bytes, bytes], key: str) -> list[bytes | None]:
    """Return every value of header ``key`` in record order."""
    return [value for name, value in record.headers if name == key]


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    """Index spans by name, failing on duplicates."""
    index = {span.name: span for span in spans}
    assert len(index) == len(spans), [span.name for span in spans]
    return index


def parent_id(span: ReadableSpan) -> int | None:
    """Return the span id of ``span``'s parent, or None for a root."""
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    """Return ``span``'s own span id."""
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


async def test_trace_id_survives_produce_consume_produce_consume_and_handler_logs_carry_it(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer, json_lines: JsonLines
) -> None:
    """One trace id covers gateway -> worker -> executor over two topics, spans and logs alike."""
    first = await topics.create("hop1")
    second = await topics.create("hop2")
    tracer = telemetry.tracer_provider.get_tracer("tests")
    finished: list[dict[str, Any]] = []

    async def forward(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        with tracer.start_as_current_span("worker.handle"):
            log.info("forwarding request %s", event["n"])
            await send_event(producer, second, {"n": event["n"]}, key=record.key)

    async def finish(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        log.info("executing request %s", event["n"])
        finished.append(event)

    with tracer.start_as_current_span("gateway.request") as root:
        root_ctx = root.get_span_context()
        await send_event(producer, first, {"n": 7}, key="session-7")

    async with (
        running(worker([first], forward, telemetry)),
        running(worker([second], finish, telemetry)),
    ):
        await wait_until(lambda: finished, lambda done: len(done) == 1, "second hop")

    spans = by_name(telemetry.finished_spans())
    assert set(spans) == {"gateway.request", f"process {first}", "worker.handle",
                          f"process {second}"}
    assert {span.context.trace_id for span in spans.values()} == {root_ctx.trace_id}
    assert parent_id(spans[f"process {first}"]) == root_ctx.span_id
    assert parent_id(spans["worker.handle"]) == span_id(spans[f"process {first}"])
    assert parent_id(spans[f"process {second}"]) == span_id(spans["worker.handle"])

    logs = telemetry.log_records()
    assert [record.log_record.body for record in logs] == [
        "forwarding request 7", "executing request 7"]
    assert [record.log_record.trace_id for record in logs] == [root_ctx.trace_id] * 2
    assert [record.log_record.span_id for record in logs] == [
        span_id(spans["worker.handle"]), span_id(spans[f"process {second}"])]
    lines = [line for line in json_lines.parsed() if line["logger"] == HANDLER_LOGGER]
    assert [(line["message"], line["trace_id"], line["span_id"]) for line in lines] == [
        ("forwarding request 7", trace.format_trace_id(root_ctx.trace_id),
         trace.format_span_id(span_id(spans["worker.handle"]))),
        ("executing request 7", trace.format_trace_id(root_ctx.trace_id),
         trace.format_span_id(span_id(spans[f"process {second}"]))),
    ]

    (hop1,) = await read_topic(first)
    (hop2,) = await read_topic(second)
    assert header_values(hop1, "traceparent") == [traceparent_of(root).encode()]
    assert json.loads(hop1.value)["trace_context"] == {"traceparent": traceparent_of(root)}
    worker_handle = traceparent_of(spans["worker.handle"])
    assert header_values(hop2, "traceparent") == [worker_handle.encode()]
    assert json.loads(hop2.value)["trace_context"] == {"traceparent": worker_handle}



async def test_process_span_carries_messaging_semconv_attributes_and_baggage(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """The process span is CONSUMER ``process {topic}`` with messaging attributes; baggage flows."""
    topic = await topics.create("semconv")
    group = new_group()
    seen_baggage: list[object] = []

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        seen_baggage.append(baggage.get_baggage("tenant"))

    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with telemetry.tracer_provider.get_tracer("tests").start_as_current_span("root"):
            metadata = await send_event(producer, topic, {"x": 1}, key="k-1")
    finally:
        context.detach(token)
    async with running(worker([topic], handle, telemetry, group=group)):
        await wait_until(lambda: seen_baggage, lambda seen: len(seen) == 1,
                         "the handler")

    assert seen_baggage == ["acme"]
    process = by_name(telemetry.finished_spans())[f"process {topic}"]
    assert process.kind is SpanKind.CONSUMER
    assert dict(process.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": "0",
        "messaging.kafka.offset": metadata.offset,
        "messaging.consumer.group.name": group,
        "messaging.kafka.message.key": "k-1",
    }
    (record,) = await read_topic(topic)
    assert header_values(record, "baggage") == [b"tenant=acme"]
    assert json.loads(record.value)["trace_context"]["baggage"] == "tenant=acme"
    assert telemetry.counter(TRACE_CONTEXT_INVALID_TOTAL) == {}



@pytest.mark.parametrize("lean", [False, True], ids=["contrib", "lean"])
async def test_with_aiokafka_instrumentation_the_trace_has_exactly_the_expected_spans(
    topics: Topics, telemetry: Telemetry, lean: bool
) -> None:
    """Instrumented, with the contrib's send and getone or the library's lean ones: root ->
    send -> {receive, process -> handler}; one traceparent, no orphans."""
    topic = await topics.create("instrumented")
    tracer = telemetry.tracer_provider.get_tracer("tests")
    handled: list[int] = []

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        with tracer.start_as_current_span("handler.work"):
            handled.append(record.offset)

    instrumentor = AIOKafkaInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    if lean:
        assert _aiokafka.replace_contrib(telemetry.tracer_provider)
    try:
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True,
                                    acks="all")
        await producer.start()
        try:
            with tracer.start_as_current_span("root") as root:
                await send_event(producer, topic, {"x": 1}, key="k")
        finally:
            await producer.stop()
        async with running(worker([topic], handle, telemetry)):
            await wait_until(lambda: handled, lambda seen: seen == [0], "handler")
    finally:
        _aiokafka.restore_contrib()
        instrumentor.uninstrument()

    spans = by_name(telemetry.finished_spans())
    assert set(spans) == {"root", f"{topic} send", f"{topic} receive", f"process {topic}",
                          "handler.work"}
    trace_id = root.get_span_context().trace_id
    assert {span.context.trace_id for span in spans.values()} == {trace_id}
    send = spans[f"{topic} send"]
    assert send.kind is SpanKind.PRODUCER
    assert parent_id(send) == root.get_span_context().span_id
    assert spans[f"{topic} receive"].kind is SpanKind.CONSUMER
    assert parent_id(spans[f"{topic} receive"]) == span_id(send)
    assert parent_id(spans[f"process {topic}"]) == span_id(send)
    assert parent_id(spans["handler.work"]) == span_id(spans[f"process {topic}"])

    (record,) = await read_topic(topic)
    assert header_values(record, "traceparent") == [traceparent_of(send).encode()]
    assert json.loads(record.value)["trace_context"] == {"traceparent": traceparent_of(root)}
    assert {spans[name].instrumentation_scope.name  # type: ignore[union-attr]
            for name in (f"{topic} send", f"{topic} receive")} == {
        "otel.aiokafka" if lean else "opentelemetry.instrumentation.aiokafka"}


async def test_lean_send_span_carries_the_contrib_attributes_and_the_partition_written_to(
    topics: Topics, telemetry: Telemetry
) -> None:
    """The lean send span has exactly the contrib send span's attributes (a key that is not
    UTF-8 included), its partition id the one the record was written to (keyed over 4
    partitions, or named by the caller)."""
    topic = await topics.create("lean-attributes", dlq=False, partitions=4)
    keys: list[str | bytes] = [f"k-{n}" for n in range(7)] + [b"\xff\x00"]
    tracer = telemetry.tracer_provider.get_tracer("tests")
    instrumentor = AIOKafkaInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, client_id="lean-test")
    partition_step = AIOKafkaProducer._partition
    await producer.start()
    try:
        with tracer.start_as_current_span("contrib"):
            for key in keys:
                await send_event(producer, topic, {"n": 1}, key=key)
        assert _aiokafka.replace_contrib(telemetry.tracer_provider)
        with tracer.start_as_current_span("lean"):
            written = [(await send_event(producer, topic, {"n": 2}, key=key)).partition
                       for key in keys]
            named = await send_event(producer, topic, {"n": 3}, partition=2)
    finally:
        await producer.stop()
        _aiokafka.restore_contrib()
        instrumentor.uninstrument()
    spans = [dict(s.attributes or {}) for s in telemetry.finished_spans()
             if s.name == f"{topic} send"]
    contrib, lean, lean_named = spans[:8], spans[8:16], spans[16]
    assert lean == contrib
    assert [s["messaging.destination.partition.id"] for s in lean] == [str(p) for p in written]
    assert len(set(written)) > 1, written  # the keys spread, so the check is not vacuous
    assert (named.partition, lean_named["messaging.destination.partition.id"]) == (2, "2")
    assert "messaging.kafka.message.key" not in lean_named
    assert AIOKafkaProducer._partition is partition_step  # restore_contrib put it back


@pytest.mark.parametrize(
    ("headers", "trace_context", "counted"),
    [
        pytest.param([], None, {("none", "missing")}, id="no-context-anywhere"),
        pytest.param([("traceparent", b"00-not-a-traceparent")], None,
                     {("header", "invalid_traceparent")}, id="header-garbage"),
        pytest.param([("traceparent", None)], None, {("header", "not_bytes")},
                     id="header-null"),
        pytest.param([("traceparent", b"\xff\xfe\x00")], None, {("header", "not_utf8")},
                     id="header-not-utf8"),
        pytest.param([("traceparent", b"0" * 100_000)], None, {("header", "too_large")},
                     id="header-huge"),
        pytest.param([], ["00-abc"], {("body", "not_object")}, id="body-not-object"),
        pytest.param([], {"traceparent": 42}, {("body", "not_string")}, id="body-not-string"),
        pytest.param([], {"traceparent": "x" * 100_000}, {("body", "too_large")},
                     id="body-huge"),
        pytest.param([], {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"},
                     {("body", "invalid_traceparent")}, id="body-zero-trace-id"),
        pytest.param([("traceparent", b"bad")], {"traceparent": 1},
                     {("header", "invalid_traceparent"), ("body", "not_string")},
                     id="both-broken"),
    ],
)
async def test_malformed_trace_context_starts_a_new_trace_counts_it_and_never_raises(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer,
    headers: list[tuple[str, bytes | None]], trace_context: object,
    counted: set[tuple[str, str]],
) -> None:
    """A record with broken context is still handled, in a fresh root trace, counted exactly."""
    topic = await topics.create("malformed")
    group = new_group()
    body: dict[str, Any] = {"n": 1}
    if trace_context is not None:
        body["trace_context"] = trace_context
    await producer.send_and_wait(topic, json.dumps(body).encode(), headers=headers)
    handled: list[int] = []

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        handled.append(event["n"])

    async with running(worker([topic], handle, telemetry, group=group)):
        await wait_until(lambda: topics.committed(group, topic), lambda offset: offset == 1,
                         "the commit")

    assert handled == [1]
    (process,) = telemetry.finished_spans()
    assert process.parent is None
    assert telemetry.counter(TRACE_CONTEXT_INVALID_TOTAL) == {
        (("reason", reason), ("source", source)): 1 for source, reason in counted
    }


async def test_header_context_wins_over_body_and_body_is_the_fallback(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """Headers are read first; with no usable header the body's trace_context is the parent."""
    topic = await topics.create("precedence")
    group = new_group()
    tracer = telemetry.tracer_provider.get_tracer("tests")
    with tracer.start_as_current_span("header-parent") as header_parent:
        pass
    with tracer.start_as_current_span("body-parent") as body_parent:
        pass
    body_tc = {"traceparent": traceparent_of(body_parent)}
    header_tp = traceparent_of(header_parent).encode()
    await producer.send_and_wait(
        topic, json.dumps({"n": 0, "trace_context": body_tc}).encode(),
        headers=[("traceparent", header_tp)])
    await producer.send_and_wait(
        topic, json.dumps({"n": 1, "trace_context": body_tc}).encode(), headers=[])
    await producer.send_and_wait(
        topic, json.dumps({"n": 2, "trace_context": body_tc}).encode(),
        headers=[("traceparent", b"\xff")])

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        return None

    async with running(worker([topic], handle, telemetry, group=group)):
        await wait_until(lambda: topics.committed(group, topic), lambda offset: offset == 3,
                         "three commits")

    processes = [span for span in telemetry.finished_spans() if span.name == f"process {topic}"]
    assert [parent_id(span) for span in processes] == [
        header_parent.get_span_context().span_id,
        body_parent.get_span_context().span_id,
        body_parent.get_span_context().span_id,
    ]
    assert telemetry.counter(TRACE_CONTEXT_INVALID_TOTAL) == {
        (("reason", "not_utf8"), ("source", "header")): 1}


async def test_a_raising_process_hook_never_crashes_the_consumer(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """A hook that raises is logged; the handler still runs and the offset is committed."""
    topic = await topics.create("hook")
    group = new_group()
    await producer.send_and_wait(topic, b'{"n": 1}')
    handled: list[int] = []

    def hook(span: Span, record: ConsumerRecord[Any, Any]) -> None:
        raise RuntimeError("broken hook")

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        handled.append(event["n"])

    async with running(worker([topic], handle, telemetry, group=group, process_hook=hook)):
        await wait_until(lambda: topics.committed(group, topic), lambda offset: offset == 1,
                         "the commit")
    assert handled == [1]
