"""The local stack: every component is real, reachable on loopback and does its job."""

from __future__ import annotations

import logging
import uuid

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from tests import live

pytestmark = pytest.mark.usefixtures("stack")


def _resource(service: str) -> Resource:
    return Resource.create({"service.name": service, "service.instance.id": "stack-test"})


async def test_kafka_round_trip_delivers_the_record_produced() -> None:
    """A record produced to a new topic is consumed back with its key and value intact."""
    topic = f"stack-test-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=live.KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=live.KAFKA, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"value-1", key=b"key-1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=live.KAFKA, auto_offset_reset="earliest", group_id=topic
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"key-1", b"value-1")


def test_collector_serves_an_otlp_metric_on_its_prometheus_endpoint() -> None:
    """A counter sent over OTLP appears on the collector's exporter under its Prometheus name."""
    service = f"stack-test-{uuid.uuid4().hex[:8]}"
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=live.OTLP_GRPC, insecure=True), export_interval_millis=60_000
    )
    provider = MeterProvider(resource=_resource(service), metric_readers=[reader])
    provider.get_meter("stack-test").create_counter("stack_test_events_total").add(3)
    provider.shutdown()
    line = f'stack_test_events_total{{instance="stack-test",job="{service}"}} 3'
    live.wait_until(
        lambda: live.get_text(live.COLLECTOR_METRICS),
        lambda body: line in body,
        timeout=30,
        what=line,
    )


def test_span_sent_to_the_collector_is_found_in_jaeger() -> None:
    """A span marked always-keep goes through tail sampling and is served by Jaeger's API."""
    service = f"stack-test-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=_resource(service))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=live.OTLP_GRPC, insecure=True))
    )
    with provider.get_tracer("stack-test").start_as_current_span("stack-test-span") as span:
        span.set_attribute("soma.sampling.keep", True)
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    spans = live.wait_until(
        lambda: live.jaeger_trace(trace_id),
        lambda s: len(s) == 1,
        timeout=60,
        what=f"trace {trace_id} in Jaeger",
    )
    assert spans[0]["operationName"] == "stack-test-span"


def test_span_sent_to_the_collector_becomes_http_request_series() -> None:
    """An HTTP server span becomes http_requests_total with the spec's labels, job the service."""
    service = f"stack-test-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=_resource(service))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=live.OTLP_GRPC, insecure=True))
    )
    with provider.get_tracer("stack-test").start_as_current_span(
        "GET /ping",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "http.route": "/ping",
            "http.response.status_code": 200,
        },
    ):
        pass
    provider.shutdown()
    expr = f'http_requests_total{{job="{service}"}}'
    # The exporter shows a new counter series at 0 for one flush before its value.
    result = live.wait_until(
        lambda: live.prom_query(expr),
        lambda r: len(r) == 1 and r[0]["value"][1] == "1",
        timeout=60,
        what=f"{expr} == 1",
    )
    assert result[0]["metric"] == {
        "__name__": "http_requests_total",
        "job": service,
        "instance": "stack-test",
        "method": "GET",
        "endpoint": "/ping",
        "status": "200",
    }


def test_log_record_sent_to_the_collector_is_found_in_victorialogs() -> None:
    """A log record sent over OTLP is stored by VictoriaLogs with its service and body."""
    service = f"stack-test-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex
    provider = LoggerProvider(resource=_resource(service))
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=live.OTLP_GRPC, insecure=True))
    )
    logger = logging.getLogger(f"stack-test.{marker}")
    logger.propagate = False
    logger.addHandler(LoggingHandler(logger_provider=provider))
    logger.warning("stack test %s", marker)
    provider.shutdown()
    entries = live.wait_until(
        lambda: live.logs_query(f'"{marker}"'),
        lambda e: len(e) == 1,
        timeout=30,
        what=f"log {marker} in VictoriaLogs",
    )
    assert entries[0]["service.name"] == service
    assert entries[0]["_msg"] == f"stack test {marker}"


def test_prometheus_is_ready_and_every_target_is_up() -> None:
    """Prometheus answers ready and every configured scrape target reports up."""
    assert live.get_text(f"{live.PROMETHEUS}/-/ready").startswith("Prometheus")

    def targets() -> list[dict[str, str]]:
        active = live.get_json(f"{live.PROMETHEUS}/api/v1/targets")["data"]["activeTargets"]
        return [{"job": t["labels"]["job"], "health": t["health"]} for t in active]

    result = live.wait_until(
        targets,
        lambda ts: all(t["health"] == "up" for t in ts),
        timeout=45,
        what="every Prometheus target up",
    )
    assert {t["job"] for t in result} == {
        "otel-collector",
        "otel-collector-self",
        "redis",
        "postgres",
        "kafka",
        "prometheus",
        "alertmanager",
        "jaeger",
        "victoria-logs",
    }


def test_alertmanager_is_ready() -> None:
    """Alertmanager answers its readiness endpoint."""
    assert live.get_text(f"{live.ALERTMANAGER}/-/ready").strip() == "OK"


async def test_redis_answers_ping() -> None:
    """Redis answers PING."""
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_postgres_answers_select_1() -> None:
    """PostgreSQL runs a query."""
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def test_slm_answers_a_chat_completion_with_token_usage() -> None:
    """The real SmolLM2 model answers a chat completion and reports its token usage."""
    answer = live.post_json(
        f"{live.SLM}/v1/chat/completions",
        {
            "model": "smollm2-135m-instruct",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hello."}],
        },
    )
    usage = answer["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert answer["choices"][0]["message"]["content"].strip()
