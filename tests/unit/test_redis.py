"""Redis client spans (otel._redis), on the stack's real Redis: one CLIENT span per command or
pipeline, the contrib instrumentation's attributes, no argument values."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster
import redis.cluster
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel import _redis
from tests.live import wait_until

URL = "redis://127.0.0.1:6379/0"
pytestmark = pytest.mark.usefixtures("stable_http_conventions")

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


@pytest.fixture(scope="module")
def cluster_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A one-node Redis Cluster (Debian's redis-server, every slot on the node) on a free port."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server not found (Debian package redis-server; stack/install)")
    with socket.socket() as probe, socket.socket() as bus_probe:
        probe.bind(("127.0.0.1", 0))
        bus_probe.bind(("127.0.0.1", 0))
        port, bus_port = int(probe.getsockname()[1]), int(bus_probe.getsockname()[1])
    workdir: Path = tmp_path_factory.mktemp("redis-cluster")
    process = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
         "--cluster-enabled", "yes", "--cluster-port", str(bus_port), "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    node = redis.Redis(port=port)

    def assign_every_slot() -> bool:
        assert process.poll() is None, f"redis-server --cluster-enabled on port {port} exited"
        try:
            node.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
        except redis.ConnectionError:
            return False  # not listening yet
        return True

    try:
        wait_until(assign_every_slot, bool, 20, f"redis-server on port {port}", interval=0.05)
        wait_until(lambda: node.cluster("INFO")["cluster_state"], lambda state: state == "ok",
                   20, f"the one-node cluster on port {port} in state ok", interval=0.05)
        yield port
    finally:
        node.close()
        process.terminate()
        process.wait(timeout=10)


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


def assert_cluster_spans(exporter: InMemorySpanExporter) -> None:
    """SET, a pipeline of INCRBY and EXPIRE, a failing INCRBY, then DEL of two keys (which the
    cluster client splits by slot into a pipeline of two DELs): a cluster client's spans."""
    set_span, pipeline_span, failed, delete = redis_spans(exporter)
    assert (set_span.name, dict(set_span.attributes or {})) == ("SET", {
        "db.system": "redis", "db.statement": "SET ? ? ? ?", "db.redis.args_length": 5})
    assert (pipeline_span.name, dict(pipeline_span.attributes or {})) == ("INCRBY EXPIRE", {
        "db.system": "redis", "db.statement": "INCRBY ? ?\nEXPIRE ? ?",
        "db.redis.pipeline_length": 2})
    assert (failed.name, failed.status.status_code) == ("INCRBY", StatusCode.ERROR)
    assert (failed.attributes or {})["error.type"] == "redis.exceptions.ResponseError"
    assert (delete.name, (delete.attributes or {})["db.redis.pipeline_length"]) == ("DEL DEL", 2)


def test_cluster_client_commands_and_pipelines_are_traced(
    spans: tuple[TracerProvider, InMemorySpanExporter], cluster_port: int
) -> None:
    """redis.RedisCluster: one span per command and per cluster pipeline, with db.system but no
    server attributes (a cluster has no single server)."""
    _, exporter = spans
    cluster = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster_port)
    exporter.clear()  # discovery: CLUSTER SLOTS on the node client, COMMAND on the cluster
    name = key()
    try:
        assert cluster.set(name, "v", ex=60) is True
        pipe = cluster.pipeline()
        pipe.incr(f"{name}:n")
        pipe.expire(f"{name}:n", 60)
        assert pipe.execute() == [1, True]
        with pytest.raises(redis.ResponseError):
            cluster.incr(name)
    finally:
        cluster.delete(name, f"{name}:n")
        cluster.close()
    assert_cluster_spans(exporter)


async def test_async_cluster_client_commands_and_pipelines_are_traced(
    spans: tuple[TracerProvider, InMemorySpanExporter], cluster_port: int
) -> None:
    """redis.asyncio.RedisCluster gets the same spans as the blocking cluster client."""
    _, exporter = spans
    cluster = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster_port)
    await cluster.initialize()
    exporter.clear()
    name = key()
    try:
        assert await cluster.set(name, "v", ex=60) is True
        async with cluster.pipeline() as pipe:
            pipe.incr(f"{name}:n")
            pipe.expire(f"{name}:n", 60)
            assert await pipe.execute() == [1, True]
        with pytest.raises(redis.ResponseError):
            await cluster.incr(name)
    finally:
        await cluster.delete(name, f"{name}:n")
        await cluster.aclose()
    assert_cluster_spans(exporter)
