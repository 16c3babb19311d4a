"""FastAPI server spans: one SERVER span per HTTP request, and nothing else.

Why not the contrib instrumentation
    ``opentelemetry-instrumentation-fastapi`` wraps the app in the generic ASGI middleware:
    it decodes every header, collects both the old and the stable semantic-convention
    attributes, matches the route a second time, and wraps ``send`` and ``receive``. Even with
    its ASGI child spans and its metrics off, that cost 150-300 us of CPU per request on the
    benchmark machine, more than the rest of the request (``docs/benchmarks.md``). The
    collector derives ``http_requests_total`` and ``http_request_duration_seconds`` from the
    SERVER span alone, so this module makes only that span, as cheaply as the SDK allows.

What the span carries (stable HTTP semantic conventions)
    Name ``"{method} {route}"`` (``"{method}"`` when no route matched). At start:
    ``http.request.method`` (``_OTHER`` plus ``http.request.method_original`` for unknown
    methods), ``url.scheme``, ``url.path``, ``url.query`` (when present; the scrubber redacts
    secrets in it), ``server.address`` and ``server.port`` (from ``Host``, else the socket),
    ``client.address``, ``client.port``, ``network.protocol.version``, ``user_agent.original``.
    At the end: ``http.route`` (FastAPI's route template, e.g.
    ``/v1/sessions/{session_id}/messages``), ``http.response.status_code``. A 5xx answer sets
    status ERROR and ``error.type`` to the status code; an exception escaping the app records
    an ``exception`` event, status ERROR and ``error.type`` = its qualified class name. 4xx
    answers are not errors of a server span. The status description is the exception's class
    name only: its message goes into the event, where the scrubber redacts secrets.

Context
    The parent is extracted from the request headers with the global propagator
    (``OTEL_PROPAGATORS``, W3C trace context and baggage by default); a malformed
    ``traceparent`` starts a new trace. The span is current while the app runs, so Redis,
    Kafka and other client spans are its children.

Scope
    HTTP requests only. WebSocket connections and lifespan events pass through untraced.
    ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` (or ``OTEL_PYTHON_EXCLUDED_URLS``), a comma-separated
    list of regular expressions searched in the request URL as in the contrib instrumentation,
    leaves matching requests untraced (the services list their health probes there).
    The request scope is marked with FastAPI's own ``"fastapi.telemetry"`` opt-out key, so
    FastAPI's built-in telemetry and mounted FastAPI sub-applications add no second span. An
    app that the contrib instrumentation instrumented (``opentelemetry-instrument`` patches the
    ``FastAPI`` class at start-up, so modules that imported it early create such apps) loses
    the contrib middleware on its first request.

Usage
    :func:`otel.configure` calls :func:`instrument` in both modes, after removing the contrib
    instrumentation that ``opentelemetry-instrument`` applied. It patches
    ``FastAPI.__call__``, so it covers apps created before and after the call;
    :func:`uninstrument` restores it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS, CLIENT_PORT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.http import ExcludeList, parse_excluded_urls

from otel._sdk import start_span
from otel._spans import error_type_of

__all__ = ["instrument", "is_instrumented", "uninstrument"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGICall = Callable[[FastAPI, Scope, Receive, Send], Awaitable[None]]

SCOPE_NAME = "otel.fastapi"
#: FastAPI's opt-out key: with it in the scope, FastAPI's built-in telemetry stays out.
_FASTAPI_TELEMETRY_KEY = "fastapi.telemetry"
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _HeaderGetter(Getter[list[tuple[bytes, bytes]]]):
    """Reads propagation fields from the raw ASGI header list (lower-case byte names)."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for field, value in carrier if field == name]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [field.decode("latin-1") for field, _ in carrier]


_GETTER = _HeaderGetter()


@functools.lru_cache(maxsize=256)
def _host_port(host: bytes, scheme: str) -> tuple[str, int]:
    """``server.address`` and ``server.port`` from a ``Host`` header (cached: it repeats)."""
    text = host.decode("latin-1")
    if text.startswith("["):  # an IPv6 literal, [::1]:8080
        address, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port = text.partition(":")
    return address, int(port) if port.isdigit() else _DEFAULT_PORTS.get(scheme, 80)


def _request_attributes(scope: Scope, method: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        HTTP_REQUEST_METHOD: method if method in _KNOWN_METHODS else "_OTHER",
        URL_SCHEME: scope.get("scheme", "http"),
        URL_PATH: scope["path"],
    }
    if method not in _KNOWN_METHODS:
        attributes[HTTP_REQUEST_METHOD_ORIGINAL] = method
    if scope.get("query_string"):
        attributes[URL_QUERY] = scope["query_string"].decode("latin-1")
    host = user_agent = None
    for field, value in scope["headers"]:
        if field == b"host":
            host = value
        elif field == b"user-agent":
            user_agent = value
    if host:
        attributes[SERVER_ADDRESS], attributes[SERVER_PORT] = _host_port(
            host, attributes[URL_SCHEME])
    elif scope.get("server"):
        attributes[SERVER_ADDRESS], attributes[SERVER_PORT] = scope["server"][:2]
    if scope.get("client"):
        attributes[CLIENT_ADDRESS], attributes[CLIENT_PORT] = scope["client"][:2]
    if scope.get("http_version"):
        attributes[NETWORK_PROTOCOL_VERSION] = scope["http_version"]
    if user_agent:
        attributes[USER_AGENT_ORIGINAL] = user_agent.decode("latin-1")
    return attributes


def _server_spans(call: ASGICall, tracer: Tracer, excluded: ExcludeList | None) -> ASGICall:
    """``call`` (``FastAPI.__call__``) with a SERVER span around each HTTP request; a plain
    function, so that it binds as a method with no extra coroutine per request."""

    async def __call__(app: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        if app.__dict__.get("_is_instrumented_by_opentelemetry"):
            _remove_contrib(app)
        if scope["type"] != "http" or _FASTAPI_TELEMETRY_KEY in scope:
            if scope["type"] == "websocket":
                scope.setdefault(_FASTAPI_TELEMETRY_KEY, None)
            await call(app, scope, receive, send)
            return
        scope[_FASTAPI_TELEMETRY_KEY] = None
        if excluded is not None and excluded.url_disabled(_url(scope)):
            await call(app, scope, receive, send)
            return
        method = scope["method"]
        headers = scope["headers"]
        parent = propagate.extract(headers, getter=_GETTER)
        span = start_span(
            tracer, method, parent, SpanKind.SERVER, _request_attributes(scope, method))
        token = context.attach(trace.set_span_in_context(span, parent))
        status_code = 0

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        error: BaseException | None = None
        try:
            await call(app, scope, receive, send_status)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _finish(span, scope, method, status_code, error)
            context.detach(token)

    return __call__


def _remove_contrib(app: FastAPI) -> None:
    """Take the contrib instrumentation's middleware out of ``app``.

    ``opentelemetry-instrument`` replaces ``fastapi.FastAPI`` with the contrib subclass at
    start-up, so a module that imported ``FastAPI`` before :func:`otel.configure` creates apps
    that instrument themselves; this removes it on their first request, before any span."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.uninstrument_app(app)


def _url(scope: Scope) -> str:
    host = next((v for f, v in scope["headers"] if f == b"host"), b"").decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    url = f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{scope['path']}"
    return f"{url}?{query}" if query else url


def _finish(
    span: trace.Span, scope: Scope, method: str, status_code: int, error: BaseException | None
) -> None:
    attributes: dict[str, Any] = {}
    route = getattr(scope.get("route"), "path_format", None)
    if route:
        attributes[HTTP_ROUTE] = route
        span.update_name(f"{method if method in _KNOWN_METHODS else 'HTTP'} {route}")
    elif method not in _KNOWN_METHODS:
        span.update_name("HTTP")
    if status_code:
        attributes[HTTP_RESPONSE_STATUS_CODE] = status_code
    if error is not None:
        attributes[ERROR_TYPE] = error_type_of(error)
        span.record_exception(error)
        # The message stays in the exception event, whose attributes the scrubber sees; a
        # status description is exported as is.
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    elif status_code >= 500 or not status_code:
        attributes[ERROR_TYPE] = str(status_code) if status_code else "incomplete_response"
        span.set_status(Status(StatusCode.ERROR))
    span.set_attributes(attributes)
    span.end()


_original_call: ASGICall | None = None


def _excluded_urls() -> ExcludeList | None:
    """The contrib instrumentation's exclusion list from the environment; None when empty."""
    raw = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get(
        "OTEL_PYTHON_EXCLUDED_URLS")
    return parse_excluded_urls(raw) if raw and raw.strip() else None


def instrument(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace every FastAPI app's HTTP requests (see the module docstring); idempotent."""
    global _original_call
    if _original_call is not None:
        return
    tracer = trace.get_tracer(SCOPE_NAME, tracer_provider=tracer_provider)
    excluded = _excluded_urls()
    _original_call = FastAPI.__call__
    FastAPI.__call__ = _server_spans(  # type: ignore[method-assign,assignment]
        _original_call, tracer, excluded)


def uninstrument() -> None:
    """Restore ``FastAPI.__call__``."""
    global _original_call
    if _original_call is not None:
        FastAPI.__call__ = _original_call  # type: ignore[method-assign,assignment]
        _original_call = None


def is_instrumented() -> bool:
    """True between :func:`instrument` and :func:`uninstrument`."""
    return _original_call is not None

