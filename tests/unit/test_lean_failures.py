"""A failure of the lean modules' own telemetry code never fails the request, the Redis command,
the Kafka send or the span batch: the call runs once with its own outcome, the span is dropped,
and the failure is logged once per module on the "otel" logger."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel import _aiokafka, _fastapi, _otlp, _redis, _sdk
from otel._sdk import LeanSpan

REDIS_URL = "redis://127.0.0.1:6379/0"


class Boom(Exception):
    """The app's own error."""


class StartFails(SpanProcessor):
    """A span processor whose on_start raises (a broken third-party processor)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        raise RuntimeError("processor on_start is broken")


def _raise(*_args: object, **_kwargs: object) -> Any:
    raise RuntimeError("telemetry internals are broken")


@pytest.fixture(autouse=True)
def fresh_failure_counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test's first failure warns (counts are per process); stable HTTP conventions."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    monkeypatch.setattr(_OpenTelemetrySemanticConventionStability, "_initialized", False)
    monkeypatch.setattr(_OpenTelemetrySemanticConventionStability,
                        "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
    _sdk.reset_telemetry_failures()
    yield
    _sdk.reset_telemetry_failures()
    _fastapi.uninstrument()
    _redis.uninstrument()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def provider_with(exporter: InMemorySpanExporter, *processors: SpanProcessor) -> TracerProvider:
    provider = TracerProvider()
    for processor in processors:
        provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def warnings_of(caplog: pytest.LogCaptureFixture, module: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "otel" and r.levelno == logging.WARNING
            and r.getMessage().startswith(f"otel.{module}: ")]


# ---------------------------------------------------------------------------------- FastAPI

calls: list[str] = []


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        calls.append(item_id)
        return {"id": item_id}

    @app.get("/unavailable")
    async def unavailable() -> None:
        calls.append("unavailable")
        raise HTTPException(503, "down")

    @app.get("/boom")
    async def boom() -> None:
        calls.append("boom")
        raise Boom("kaput")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app whose exceptions reach the client (raise_app_exceptions)."""
    calls.clear()
    transport = httpx.ASGITransport(app=make_app(), client=("10.0.0.7", 51234))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.local:8010") as c:
        yield c


async def assert_app_outcomes(client: httpx.AsyncClient) -> None:
    """Two requests answered by the app, a 503 and an app exception that reaches the server
    unchanged; each handler ran exactly once."""
    for item in ("a", "b"):
        response = await client.get(f"/items/{item}")
        assert (response.status_code, response.json()) == (200, {"id": item})
    response = await client.get("/unavailable")
    assert (response.status_code, response.json()) == (503, {"detail": "down"})
    with pytest.raises(Boom, match=r"^kaput$"):
        await client.get("/boom")
    assert calls == ["a", "b", "unavailable", "boom"]


async def test_request_is_served_when_a_span_processor_on_start_raises(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """Span start failing (a processor's on_start raises): the app's answers and exception, no
    span, one warning for all four requests."""
    _fastapi.instrument(provider_with(exporter, StartFails()))
    await assert_app_outcomes(client)
    assert exporter.get_finished_spans() == ()
    assert len(warnings_of(caplog, "fastapi")) == 1
    assert _sdk.telemetry_failures("fastapi") == 4


async def test_request_is_served_when_context_extraction_raises(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Propagation failing (the global propagator's extract raises): the app's outcomes, one
    warning."""
    _fastapi.instrument(provider_with(exporter))
    monkeypatch.setattr(propagate, "extract", _raise)
    await assert_app_outcomes(client)
    assert exporter.get_finished_spans() == ()
    assert len(warnings_of(caplog, "fastapi")) == 1


async def test_request_is_served_when_attribute_extraction_raises(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
) -> None:
    """Attribute extraction failing (a server that gives a client address without a port):
    the app's answer, no span, one warning."""
    calls.clear()
    _fastapi.instrument(provider_with(exporter))
    transport = httpx.ASGITransport(app=make_app(), client=("10.0.0.7",))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for _ in range(2):
            response = await c.get("/items/z")
            assert (response.status_code, response.json()) == (200, {"id": "z"})
    assert calls == ["z", "z"]
    assert exporter.get_finished_spans() == ()
    assert len(warnings_of(caplog, "fastapi")) == 1


async def test_request_is_served_when_ending_the_span_raises(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Span end failing (the SDK span's end raises): the app's outcomes, the app exception not
    replaced by the telemetry's, one warning."""
    _fastapi.instrument(provider_with(exporter))
    monkeypatch.setattr(LeanSpan, "end", _raise)
    await assert_app_outcomes(client)
    assert exporter.get_finished_spans() == ()
    assert len(warnings_of(caplog, "fastapi")) == 1


async def test_without_failures_nothing_is_logged(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """The control: the same requests make four spans and no warning."""
    _fastapi.instrument(provider_with(exporter))
    await assert_app_outcomes(client)
    assert len(exporter.get_finished_spans()) == 4
    assert warnings_of(caplog, "fastapi") == []


# ------------------------------------------------------------------------------------ Redis

def key() -> str:
    return f"test:otel-failures:{uuid.uuid4().hex}"


async def assert_redis_outcomes(client: aioredis.Redis) -> None:
    """Commands return their values and run once (INCRBY 5 twice reads 10), a pipeline returns
    its results, a Redis error reaches the caller."""
    name = key()
    try:
        assert await client.incrby(name, 5) == 5
        assert await client.incrby(name, 5) == 10
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, 60)
            assert await pipe.execute() == [11, True]
        await client.set(name, "not a number", ex=60)
        with pytest.raises(redis.ResponseError, match="not an integer"):
            await client.incr(name)
        assert await client.get(name) == b"not a number"
    finally:
        await client.delete(name)


@pytest.fixture
async def redis_client(stack: None) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(REDIS_URL)
    yield c
    await c.aclose()


async def test_redis_commands_return_their_values_when_span_start_raises(
    redis_client: aioredis.Redis, exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A processor whose on_start raises: every command's value and error as without
    instrumentation, no spans, one warning."""
    _redis.instrument(provider_with(exporter, StartFails()))
    await assert_redis_outcomes(redis_client)
    assert exporter.get_finished_spans() == ()
    assert len(warnings_of(caplog, "redis")) == 1


async def test_redis_commands_return_their_values_when_span_end_raises(
    redis_client: aioredis.Redis, exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK span's end raising: values and the ResponseError unchanged, one warning."""
    _redis.instrument(provider_with(exporter))
    monkeypatch.setattr(LeanSpan, "end", _raise)
    await assert_redis_outcomes(redis_client)
    assert len(warnings_of(caplog, "redis")) == 1


def test_sync_redis_command_runs_once_when_span_start_raises(
    stack: None, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """The blocking client too: INCRBY runs once and returns its value."""
    _redis.instrument(provider_with(exporter, StartFails()))
    client = redis.Redis.from_url(REDIS_URL)
    name = key()
    try:
        assert client.incrby(name, 3) == 3
        assert client.get(name) == b"3"
    finally:
        client.delete(name)
        client.close()
    assert len(warnings_of(caplog, "redis")) == 1


# ---------------------------------------------------------------------------------- aiokafka

class _Client:
    _bootstrap_servers = "127.0.0.1:9092"
    _client_id = "failures-test"


class _Producer:
    """What the lean send wrapper reads of an AIOKafkaProducer."""

    client = _Client()


async def test_kafka_send_runs_once_with_the_callers_headers_when_injection_raises(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Header injection failing: send runs once with the caller's headers untouched and
    returns its result, the span is dropped, one warning."""
    sent: list[tuple[Any, ...]] = []

    async def send(self: Any, topic: str, value: Any, key: Any, partition: Any,
                   timestamp_ms: Any, headers: Any) -> str:
        sent.append((topic, value, key, list(headers)))
        return "future"

    provider = provider_with(exporter)
    traced = _aiokafka._traced_send(provider.get_tracer("t"), send)

    def half_inject(carrier: list[tuple[str, bytes]], **_kwargs: object) -> None:
        carrier.append(("traceparent", b"half"))
        raise RuntimeError("propagator is broken")

    monkeypatch.setattr(propagate, "inject", half_inject)
    headers = [("tenant", b"acme")]
    for _ in range(2):
        assert await traced(_Producer(), "events", b"v", b"k", headers=headers) == "future"
    assert sent == [("events", b"v", b"k", [("tenant", b"acme")])] * 2
    assert headers == [("tenant", b"acme")]
    assert exporter.get_finished_spans() == ()
    assert len(warnings_of(caplog, "aiokafka")) == 1


async def test_kafka_send_error_is_the_callers_when_ending_the_span_raises(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Span end failing while send raises: the caller gets send's own exception."""

    async def send(*_args: Any) -> None:
        raise KeyError("no such topic")

    traced = _aiokafka._traced_send(provider_with(exporter).get_tracer("t"), send)
    monkeypatch.setattr(LeanSpan, "end", _raise)
    with pytest.raises(KeyError, match="no such topic"):
        await traced(_Producer(), "events", b"v")
    assert len(warnings_of(caplog, "aiokafka")) == 1


# -------------------------------------------------------------------------------------- OTLP

def finished(provider: TracerProvider, exporter: InMemorySpanExporter,
             *names: str, **attributes: Any) -> list[ReadableSpan]:
    tracer = provider.get_tracer("otel.test")
    for name in names:
        tracer.start_span(name, attributes=attributes).end()
    spans = list(exporter.get_finished_spans())
    exporter.clear()
    return spans


def span_names(encoded: bytes) -> list[str]:
    request = ExportTraceServiceRequest.FromString(encoded)
    return [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_a_span_that_cannot_be_encoded_is_dropped_and_the_batch_goes_out(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """A span named with a lone surrogate (not encodable as UTF-8) is dropped and counted; the
    other spans of the batch are encoded; one warning for two such batches."""
    provider = provider_with(exporter)
    before = _otlp.unencodable_spans()
    for _ in range(2):
        batch = finished(provider, exporter, "first", "bad \ud800", "last")
        assert span_names(_otlp.encode_spans(batch)) == ["first", "last"]
    assert _otlp.unencodable_spans() - before == 2
    assert len(warnings_of(caplog, "otlp")) == 1


def test_an_attribute_that_cannot_be_encoded_is_skipped_and_the_span_kept(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """An attribute value with a lone surrogate is skipped (logged as the reference encoder
    logs it); the span and its other attributes go out."""
    provider = provider_with(exporter)
    (span,) = finished(provider, exporter, "kept", good="yes", bad="x\ud800")
    request = ExportTraceServiceRequest.FromString(_otlp.encode_spans([span]))
    (encoded,) = request.resource_spans[0].scope_spans[0].spans
    assert (encoded.name, [(a.key, a.value.string_value) for a in encoded.attributes]) == (
        "kept", [("good", "yes")])
    assert "Failed to encode key bad" in caplog.text
    assert warnings_of(caplog, "otlp") == []
