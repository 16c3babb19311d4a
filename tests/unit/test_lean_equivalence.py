"""The lean FastAPI and Redis spans equal the contrib instrumentations' spans, side by side on the
same requests and commands, in every OTEL_SEMCONV_STABILITY_OPT_IN mode the contrib supports;
where they differ on purpose, the exact documented difference is asserted (docs/conventions.md)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel import _fastapi, _redis

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
REDIS_URL = "redis://127.0.0.1:6379/0"


class Boom(Exception):
    """An error the app does not handle."""


@pytest.fixture
def opt_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """OTEL_SEMCONV_STABILITY_OPT_IN = the parameter, read afresh by both instrumentations."""
    value: str = request.param
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", value)
    monkeypatch.setattr(_OpenTelemetrySemanticConventionStability, "_initialized", False)
    monkeypatch.setattr(_OpenTelemetrySemanticConventionStability,
                        "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
    return value


@pytest.fixture
def memory() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A provider exporting to memory; both lean modules uninstrumented afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    _fastapi.uninstrument()
    _redis.uninstrument()


def comparable(span: ReadableSpan) -> dict[str, Any]:
    """What the two instrumentations must agree on (event stack traces differ by frames, so
    only their presence counts)."""
    parent = span.parent
    events = []
    for event in span.events:
        attributes = dict(event.attributes or {})
        assert attributes.pop("exception.stacktrace", "Traceback").startswith("Traceback")
        events.append((event.name, attributes))
    return {
        "name": span.name,
        "kind": span.kind,
        "status": (span.status.status_code, span.status.description),
        "parent": None if parent is None else (
            format(parent.trace_id, "032x"), format(parent.span_id, "016x"), parent.is_remote),
        "attributes": dict(span.attributes or {}),
        "events": events,
        "schema_url": span.instrumentation_scope.schema_url if span.instrumentation_scope
        else None,
    }


def assert_same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """``actual == expected``, attribute differences first (readable failures)."""
    attributes, wanted = actual["attributes"], expected["attributes"]
    assert {k: (attributes.get(k), wanted.get(k)) for k in attributes.keys() | wanted.keys()
            if attributes.get(k) != wanted.get(k)} == {}, actual["name"]
    assert actual == expected


# ---------------------------------------------------------------------------------- FastAPI

REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/items/7?page=2&q=a%20b", {}),  # route template with a path param, a query
    ("GET", "/no/such/path", {}),  # 404, no route
    ("GET", "/fail", {}),  # HTTPException(500)
    ("GET", "/boom", {}),  # an exception escaping the app (FastAPI answers 500)
    ("GET", "/items/8", {"traceparent": TRACEPARENT}),  # a remote parent
    ("PURGE", "/items/9", {}),  # an unknown method (405)
    ("GET", "/items/1", {"user-agent": "Googlebot/2.1"}),  # a synthetic user agent
]


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.get("/fail")
    async def fail() -> None:
        raise HTTPException(500, "bad")

    @app.get("/boom")
    async def boom() -> None:
        raise Boom("kaput")

    return app


async def server_spans(app: FastAPI, exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    """The comparable SERVER spans of REQUESTS sent to ``app`` (then cleared)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False,
                                    client=("10.0.0.7", 51234))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.local:8010") as c:
        for method, path, headers in REQUESTS:
            await c.request(method, path, headers=headers)
    spans = [comparable(s) for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    exporter.clear()
    return spans


@pytest.mark.parametrize("opt_in", ["", "http", "http/dup"], indirect=True)
async def test_fastapi_server_spans_equal_the_contribs(
    opt_in: str, memory: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """For every request, the lean SERVER span has the contrib's name, kind, status, parent,
    attributes, events and schema URL; the one difference is server.address in the stable
    modes: the Host header's host, where the contrib writes the socket's "host:port"."""
    provider, exporter = memory
    contrib_app = make_app()
    FastAPIInstrumentor.instrument_app(contrib_app, tracer_provider=provider)
    contrib = await server_spans(contrib_app, exporter)
    _fastapi.instrument(provider)
    lean = await server_spans(make_app(), exporter)
    assert len(contrib) == len(lean) == len(REQUESTS)
    for expected, actual in zip(contrib, lean, strict=True):
        if opt_in in ("http", "http/dup"):
            assert (expected["attributes"]["server.address"],
                    actual["attributes"]["server.address"]) == ("api.local:8010", "api.local")
            expected["attributes"]["server.address"] = "api.local"
        else:
            assert "server.address" not in actual["attributes"]
        assert_same(actual, expected)


@pytest.mark.parametrize("opt_in", ["", "http", "http/dup"], indirect=True)
async def test_fastapi_span_attributes_follow_the_opt_in_mode(
    opt_in: str, memory: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Old names only when unset, stable names only for http, both for http/dup."""
    provider, exporter = memory
    _fastapi.instrument(provider)
    (span, *_) = await server_spans(make_app(), exporter)
    keys = set(span["attributes"])
    old, new = {"http.method", "http.status_code", "http.url"}, {
        "http.request.method", "http.response.status_code", "url.path"}
    assert (bool(old & keys), old <= keys, bool(new & keys), new <= keys) == {
        "": (True, True, False, False), "http": (False, False, True, True),
        "http/dup": (True, True, True, True)}[opt_in]


# ------------------------------------------------------------------------------------ Redis

#: the stable HTTP and database modes, alone and together, with and without their old names
REDIS_MODES = ["", "http", "http/dup", "database", "database/dup", "http,database/dup"]


async def redis_workload(client: aioredis.Redis) -> None:
    """A command, a failing command, a pipeline and a transaction, on a fresh key."""
    name = f"test:otel-equivalence:{uuid.uuid4().hex}"
    await client.set(name, "x", ex=60)
    with pytest.raises(redis.ResponseError):
        await client.incr(name)
    async with client.pipeline(transaction=False) as pipe:
        pipe.get(name)
        pipe.expire(name, 60)
        await pipe.execute()
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(name)
        await pipe.execute()


def sync_workload(client: redis.Redis) -> None:
    """The blocking client's command and pipeline."""
    name = f"test:otel-equivalence:{uuid.uuid4().hex}"
    client.set(name, "y", ex=60)
    pipe = client.pipeline()
    pipe.get(name)
    pipe.delete(name)
    pipe.execute()


async def redis_spans(exporter: InMemorySpanExporter,
                      run: Callable[[], Awaitable[None]]) -> list[dict[str, Any]]:
    await run()
    spans = [comparable(s) for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    exporter.clear()
    return spans


@pytest.mark.parametrize("opt_in", REDIS_MODES, indirect=True)
async def test_redis_spans_equal_the_contribs(
    stack: None, opt_in: str, memory: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Commands and pipelines of both clients give the contrib's spans in every mode; the
    failing command differs exactly as documented: the lean span adds error.type and
    describes its status by the class name only."""
    provider, exporter = memory

    async def run() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            await redis_workload(client)
        finally:
            await client.aclose()
        sync = redis.Redis.from_url(REDIS_URL)
        try:
            sync_workload(sync)
        finally:
            sync.close()

    contrib_instrumentor = RedisInstrumentor()
    contrib_instrumentor.instrument(tracer_provider=provider)
    try:
        contrib = await redis_spans(exporter, run)
    finally:
        contrib_instrumentor.uninstrument()
    _redis.instrument(provider)
    lean = await redis_spans(exporter, run)
    assert [s["name"] for s in lean] == ["SET", "INCRBY", "GET EXPIRE", "DEL", "SET", "GET DEL"]
    for expected, actual in zip(contrib, lean, strict=True):
        if actual["name"] == "INCRBY":
            assert actual["attributes"].pop("error.type") == "redis.exceptions.ResponseError"
            assert (expected["status"][1], actual["status"][1]) == (
                "ResponseError: value is not an integer or out of range", "ResponseError")
            expected["status"] = actual["status"]
        assert_same(actual, expected)


@pytest.mark.parametrize("opt_in", ["http"], indirect=True)
async def test_fastapi_captured_headers_equal_the_contribs(
    opt_in: str, memory: tuple[TracerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* set, the lean SERVER span captures the
    same request and response headers as the contrib's, sanitized the same way."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
                       "authorization,x-tenant-.*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "content-type")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "x-tenant-key")
    provider, exporter = memory
    headers = {"authorization": "Bearer abc", "x-tenant-id": "t1", "x-tenant-key": "k"}

    async def captured(app: FastAPI) -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 51234))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.local") as c:
            await c.get("/items/3", headers=headers)
        (span,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
        exporter.clear()
        return {k: v for k, v in (span.attributes or {}).items() if ".header." in k}

    contrib_app = make_app()
    FastAPIInstrumentor.instrument_app(contrib_app, tracer_provider=provider)
    contrib = await captured(contrib_app)
    _fastapi.instrument(provider)
    lean = await captured(make_app())
    assert lean == contrib
    assert set(lean) == {"http.request.header.authorization", "http.request.header.x_tenant_id",
                         "http.request.header.x_tenant_key", "http.response.header.content_type"}
