"""FastAPI server spans (otel._fastapi): one SERVER span per request, stable HTTP conventions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import otel
from otel import _fastapi

pytestmark = pytest.mark.usefixtures("stable_http_conventions")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Boom(Exception):
    """An error the app does not handle."""


@pytest.fixture
def exporter(fresh_otel: None) -> Iterator[InMemorySpanExporter]:
    """A global SDK TracerProvider (scrubbing, then in-memory export) with FastAPI instrumented."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(otel.ScrubbingSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    _fastapi.instrument(provider)
    yield spans
    _fastapi.uninstrument()


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/sessions/{session_id}/messages")
    async def messages(session_id: str) -> dict[str, str]:
        with trace.get_tracer("test").start_as_current_span("child"):
            return {"session_id": session_id}

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise HTTPException(503, "down")

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404, "no such thing")

    @app.get("/boom")
    async def boom() -> None:
        raise Boom("kaput")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture
async def client(exporter: InMemorySpanExporter) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False,
                                    client=("10.0.0.7", 51234))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.local:8010") as c:
        yield c


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]


async def test_request_span_carries_the_route_template_and_stable_attributes(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    """A matched route gives one SERVER span named by method and template, with the stable
    HTTP attributes the collector's RED metrics read."""
    response = await client.get("/v1/sessions/s-42/messages?page=2",
                                headers={"User-Agent": "probe/1.0"})
    assert response.status_code == 200
    (span,) = server_spans(exporter)
    assert span.name == "GET /v1/sessions/{session_id}/messages"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "otel.fastapi"
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/v1/sessions/s-42/messages",
        "url.query": "page=2",
        "server.address": "api.local",
        "server.port": 8010,
        "client.address": "10.0.0.7",
        "client.port": 51234,
        "network.protocol.version": "1.1",
        "user_agent.original": "probe/1.0",
        "http.route": "/v1/sessions/{session_id}/messages",
        "http.response.status_code": 200,
    }
    assert span.status.status_code == StatusCode.UNSET


async def test_a_request_answered_before_routing_still_carries_its_route(
    exporter: InMemorySpanExporter,
) -> None:
    """A middleware that answers 500 before the router runs (as the gateway's fault switch
    does) leaves a span with the route the request was for, so it is counted in
    http_requests_total; a path no route matches has none."""
    app = make_app()

    @app.middleware("http")
    async def fail_first(request: object, call_next: object) -> JSONResponse:
        return JSONResponse({"error": "injected"}, status_code=500)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.local") as c:
        assert (await c.get("/v1/sessions/s-9/messages")).status_code == 500
        assert (await c.get("/no/such/path")).status_code == 500
    routed, unrouted = server_spans(exporter)
    assert routed.name == "GET /v1/sessions/{session_id}/messages"
    assert (routed.attributes or {})["http.route"] == "/v1/sessions/{session_id}/messages"
    assert routed.status.status_code == StatusCode.ERROR
    assert (unrouted.name, "http.route" in (unrouted.attributes or {})) == ("GET", False)


async def test_spans_made_by_the_handler_are_children_of_the_request_span(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    """The SERVER span is current while the app runs."""
    await client.get("/v1/sessions/s-1/messages")
    child, server = exporter.get_finished_spans()
    assert child.parent is not None and server.context is not None
    assert (child.name, child.parent.span_id) == ("child", server.context.span_id)


async def test_incoming_traceparent_becomes_the_parent(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    """A valid W3C traceparent header continues the caller's trace."""
    await client.get("/v1/sessions/s-1/messages",
                     headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    (span,) = server_spans(exporter)
    assert span.parent is not None and span.context is not None
    assert (format(span.context.trace_id, "032x"), format(span.parent.span_id, "016x")) == (
        TRACE_ID, PARENT_ID)
    assert span.parent.is_remote


@pytest.mark.parametrize("traceparent", [
    "garbage",
    f"00-{'0' * 32}-{PARENT_ID}-01",
    f"00-{TRACE_ID}-{PARENT_ID}",
    f"zz-{TRACE_ID}-{PARENT_ID}-01",
    "00-" + "x" * 10_000,
])
async def test_malformed_traceparent_starts_a_new_trace_and_the_request_succeeds(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter, traceparent: str
) -> None:
    """An unusable traceparent is ignored: the request is served and its span is a root."""
    response = await client.get("/v1/sessions/s-1/messages", headers={"traceparent": traceparent})
    assert response.status_code == 200
    (span,) = server_spans(exporter)
    assert span.parent is None


async def test_server_error_answer_marks_the_span_failed_with_the_status_code(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    """A 5xx answer sets status ERROR and error.type to the status code."""
    assert (await client.get("/unavailable")).status_code == 503
    (span,) = server_spans(exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "503"
    assert (span.attributes or {})["http.response.status_code"] == 503


async def test_client_error_answers_are_not_span_errors(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    """4xx answers, from a handler or from an unknown path, leave the status unset; an unknown
    path has no route, so the span is named by the method alone."""
    assert (await client.get("/missing")).status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404
    handled, unmatched = server_spans(exporter)
    assert [s.status.status_code for s in (handled, unmatched)] == [StatusCode.UNSET] * 2
    assert (handled.name, unmatched.name) == ("GET /missing", "GET")
    assert "http.route" not in (unmatched.attributes or {})
    assert "error.type" not in (handled.attributes or {})


async def test_escaping_exception_after_the_500_answer_is_an_event_of_the_failed_span(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    """An exception leaving a handler (FastAPI answers 500, then re-raises) gives what the
    contrib gives: status ERROR without description, error.type = "500", and an exception
    event carrying the class and the message."""
    assert (await client.get("/boom")).status_code == 500
    (span,) = server_spans(exporter)
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, None)
    assert (span.attributes or {})["error.type"] == "500"
    (event,) = span.events
    assert (event.name, (event.attributes or {})["exception.type"],
            (event.attributes or {})["exception.message"]) == (
        "exception", f"{__name__}.Boom", "kaput")


async def test_exception_before_any_answer_is_recorded_with_its_qualified_type(
    exporter: InMemorySpanExporter,
) -> None:
    """A streaming body that fails after its 200 start: status ERROR described by the class
    name only, error.type = the qualified class name, one exception event; the server sees
    the app's exception unchanged."""
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            raise Boom("midway")

        return StreamingResponse(chunks())

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        with pytest.raises(Boom, match="midway"):
            await c.get("/stream")
    (span,) = server_spans(exporter)
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "Boom")
    assert (span.attributes or {})["error.type"] == f"{__name__}.Boom"
    assert (span.attributes or {})["http.response.status_code"] == 200
    assert [e.name for e in span.events] == ["exception"]


async def test_unknown_method_is_reported_as_other_with_the_original(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    """A method outside the HTTP set becomes _OTHER, its text goes to method_original."""
    await client.request("PURGE", "/v1/sessions/s-1/messages")
    (span,) = server_spans(exporter)
    attributes = span.attributes or {}
    assert (attributes["http.request.method"], attributes["http.request.method_original"]) == (
        "_OTHER", "PURGE")
    assert span.name == "HTTP /v1/sessions/{session_id}/messages"


async def test_secrets_in_the_query_are_scrubbed(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    """url.query goes through the scrubber like every attribute."""
    await client.get("/v1/sessions/s-1/messages?access_token=abc123&page=1")
    (span,) = server_spans(exporter)
    assert (span.attributes or {})["url.query"] == f"access_token={otel.REDACTED}&page=1"


async def test_excluded_urls_are_not_traced(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_PYTHON_FASTAPI_EXCLUDED_URLS leaves matching requests untraced, others traced."""
    _fastapi.uninstrument()
    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "healthz,readyz")
    _fastapi.instrument(trace.get_tracer_provider())
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/healthz")
        await client.get("/v1/sessions/s-1/messages")
    assert [s.name for s in server_spans(exporter)] == ["GET /v1/sessions/{session_id}/messages"]


async def test_contrib_instrumented_app_gets_one_span_not_two(
    exporter: InMemorySpanExporter,
) -> None:
    """An app the contrib instrumentation instrumented (as opentelemetry-instrument does for
    apps made from its patched class) loses that middleware and yields only this module's span;
    FastAPI's built-in telemetry stays out too."""
    app = make_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=trace.get_tracer_provider())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        await client.get("/healthz")
        await client.get("/healthz")
    scopes = [s.instrumentation_scope.name for s in exporter.get_finished_spans()
              if s.instrumentation_scope is not None]
    assert scopes == ["otel.fastapi", "otel.fastapi"]


async def test_uninstrument_restores_fastapi(exporter: InMemorySpanExporter) -> None:
    """After uninstrument() the module makes no spans and FastAPI.__call__ is the original."""
    _fastapi.uninstrument()
    assert not _fastapi.is_instrumented()
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.get("/x")
    async def x() -> dict[str, str]:
        return {}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        assert (await client.get("/x")).status_code == 200
    assert exporter.get_finished_spans() == ()
