"""Redis client spans (otel._redis), on the stack's real Redis: one CLIENT span per command or
pipeline, the contrib instrumentation's attributes, no argument values."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel import _redis

URL = "redis://127.0.0.1:6379/0"
CONNECTION = {"db.system": "redis", "db.redis.database_index": 0, "server.address": "127.0.0.1",
              "server.port": 6379, "network.transport": "tcp"}


@pytest.fixture
def spans(stack: None) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """Redis instrumented on a provider exporting to memory; restored afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _redis.instrument(provider)
    yield provider, exporter
    _redis.uninstrument()


@pytest.fixture
async def client(spans: object) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(URL)
    yield c
    await c.aclose()


def redis_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]


def key() -> str:
    return f"test:otel-redis:{uuid.uuid4().hex}"


async def test_command_span_has_the_sanitized_statement_and_connection_attributes(
    spans: tuple[TracerProvider, InMemorySpanExporter], client: aioredis.Redis
) -> None:
    """A command is one CLIENT span named by the command, a child of the current span, whose
    statement replaces every argument by ?."""
    provider, exporter = spans
    name = key()
    with provider.get_tracer("t").start_as_current_span("request") as parent:
        assert await client.incrby(name, 5) == 5
    await client.delete(name)
    incr, _, _ = exporter.get_finished_spans()
    assert (incr.name, incr.kind) == ("INCRBY", SpanKind.CLIENT)
    assert dict(incr.attributes or {}) == CONNECTION | {
        "db.statement": "INCRBY ? ?", "db.redis.args_length": 3}
    assert incr.parent is not None
    assert incr.parent.span_id == parent.get_span_context().span_id
    assert incr.status.status_code == StatusCode.UNSET


async def test_argument_values_never_reach_the_span(
    spans: tuple[TracerProvider, InMemorySpanExporter], client: aioredis.Redis
) -> None:
    """Keys and values (here a secret) appear nowhere in the exported attributes."""
    _, exporter = spans
    name = key()
    await client.set(name, "s3cr3t-value", ex=60)
    await client.delete(name)
    set_span = redis_spans(exporter)[0]
    assert set_span.name == "SET"
    assert dict(set_span.attributes or {})["db.statement"] == "SET ? ? ? ?"
    assert not any(name in str(v) or "s3cr3t" in str(v)
                   for v in (set_span.attributes or {}).values())


async def test_transaction_is_one_span_listing_its_commands(
    spans: tuple[TracerProvider, InMemorySpanExporter], client: aioredis.Redis
) -> None:
    """A MULTI/EXEC pipeline is one span named by its commands, one statement line each."""
    _, exporter = spans
    name = key()
    async with client.pipeline(transaction=True) as pipe:
        pipe.incr(name)
        pipe.expire(name, 60)
        assert await pipe.execute() == [1, True]
    await client.delete(name)
    pipeline_span = redis_spans(exporter)[0]
    assert pipeline_span.name == "INCRBY EXPIRE"
    assert dict(pipeline_span.attributes or {}) == CONNECTION | {
        "db.statement": "INCRBY ? ?\nEXPIRE ? ?", "db.redis.pipeline_length": 2}


async def test_failing_command_marks_the_span_and_still_raises(
    spans: tuple[TracerProvider, InMemorySpanExporter], client: aioredis.Redis
) -> None:
    """A Redis error reaches the caller, and the span has status ERROR, error.type and the
    exception event."""
    _, exporter = spans
    name = key()
    await client.set(name, "not a number", ex=60)
    with pytest.raises(redis.ResponseError):
        await client.incr(name)
    await client.delete(name)
    failed = redis_spans(exporter)[1]
    assert failed.name == "INCRBY"
    assert (failed.status.status_code, failed.status.description) == (
        StatusCode.ERROR, "ResponseError")
    assert (failed.attributes or {})["error.type"] == "redis.exceptions.ResponseError"
    assert [e.name for e in failed.events] == ["exception"]


async def test_watch_conflict_is_not_a_span_error(
    spans: tuple[TracerProvider, InMemorySpanExporter], client: aioredis.Redis
) -> None:
    """A WatchError (an optimistic transaction to retry) leaves the pipeline span unset."""
    _, exporter = spans
    name = key()
    other = aioredis.Redis.from_url(URL)
    try:
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch(name)
            await other.set(name, "changed", ex=60)
            pipe.multi()
            pipe.set(name, "mine", ex=60)
            with pytest.raises(redis.WatchError):
                await pipe.execute()
    finally:
        await other.delete(name)
        await other.aclose()
    (pipeline_span,) = [s for s in redis_spans(exporter)
                        if "db.redis.pipeline_length" in (s.attributes or {})]
    assert (pipeline_span.name, pipeline_span.status.status_code) == ("SET", StatusCode.UNSET)


async def test_evalsha_of_an_uncached_script_is_not_a_span_error(
    spans: tuple[TracerProvider, InMemorySpanExporter], client: aioredis.Redis
) -> None:
    """A script's first EVALSHA (NOSCRIPT: the client loads it, then runs it) leaves no error."""
    _, exporter = spans
    script = client.register_script(f"return '{uuid.uuid4().hex}'")  # new to the server
    assert (await script()).decode() == script.script.split("'")[1]
    assert [(s.name, s.status.status_code, [e.name for e in s.events])
            for s in redis_spans(exporter)] == [
        ("EVALSHA", StatusCode.UNSET, []), ("SCRIPT LOAD", StatusCode.UNSET, []),
        ("EVALSHA", StatusCode.UNSET, [])]


def test_sync_client_commands_are_traced_too(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """redis.Redis (blocking) gets the same spans as redis.asyncio.Redis."""
    _, exporter = spans
    sync = redis.Redis.from_url(URL)
    try:
        assert sync.ping() is True
    finally:
        sync.close()
    (ping,) = redis_spans(exporter)
    assert (ping.name, dict(ping.attributes or {})) == (
        "PING", CONNECTION | {"db.statement": "PING", "db.redis.args_length": 1})


async def test_uninstrument_restores_the_client(
    spans: tuple[TracerProvider, InMemorySpanExporter], client: aioredis.Redis
) -> None:
    """After uninstrument() commands make no spans."""
    _, exporter = spans
    _redis.uninstrument()
    assert not _redis.is_instrumented()
    assert await client.ping() is True
    assert exporter.get_finished_spans() == ()
