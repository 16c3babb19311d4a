"""FastAPI server spans: one SERVER span per HTTP request, and nothing else.

Why not the contrib instrumentation
    ``opentelemetry-instrumentation-fastapi`` wraps the app in the generic ASGI middleware:
    it decodes every header, matches the route a second time, wraps ``send`` and ``receive``
    and makes a child span for each ASGI message. Even with its ASGI child spans and its
    metrics off, that cost 150-300 us of CPU per request on the benchmark machine, more than
    the rest of the request (``docs/benchmarks.md``). The collector derives
    ``http_requests_total`` and ``http_request_duration_seconds`` from the SERVER span alone,
    so this module makes only that span, as cheaply as the SDK allows.

What the span carries: the contrib's SERVER span, with the differences listed below
    ``OTEL_SEMCONV_STABILITY_OPT_IN`` is read as the contrib reads it (its
    ``_OpenTelemetrySemanticConventionStability`` helper, at :func:`instrument`): unset (the
    old HTTP conventions), ``http`` (the stable ones; the services run with it) or
    ``http/dup`` (both). The tracer's schema URL is the contrib's for the mode.
    Name ``"{method} {route}"`` (``"{method}"`` when no route matched; ``HTTP`` for a method
    outside the HTTP set, as the contrib's ``sanitize_method`` decides, which also honours
    ``OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS``).
    Stable attributes: ``http.request.method`` (``_OTHER`` plus
    ``http.request.method_original`` for unknown methods), ``url.scheme``, ``url.path``,
    ``url.query`` (when present; the scrubber redacts secrets in it), ``server.address`` and
    ``server.port``, ``client.address``, ``client.port``, ``network.protocol.version``,
    ``user_agent.original``; at the end ``http.route`` (FastAPI's route template, e.g.
    ``/v1/sessions/{session_id}/messages``) and ``http.response.status_code``.
    Old attributes (unset or ``http/dup``), with the contrib's values: ``http.scheme``,
    ``http.host`` and ``net.host.port`` (the socket's), ``http.flavor``, ``http.target``,
    ``http.url`` (credentials and signature parameters redacted as the contrib does),
    ``http.method``, ``http.server_name``, ``http.user_agent``, ``net.peer.ip``,
    ``net.peer.port``, ``http.route``, ``http.status_code``. Both: ``user_agent.synthetic.type``
    (``test``/``bot``) when the user agent says so.
    Status: ERROR for a status code the contrib's ``http_status_to_status_code`` calls an
    error for a server (5xx; 4xx answers are not errors of a server span), with
    ``error.type`` = the status code in the stable modes. An exception escaping the app after
    its 500 answer (FastAPI's ``ServerErrorMiddleware`` answers, then re-raises) adds an
    ``exception`` event, as the contrib does.

Differences from the contrib (deliberate; ``docs/conventions.md`` lists them too)
    * ``server.address``/``server.port`` (stable modes) come from the ``Host`` header (its
      port, else the scheme's default), else the socket, as the stable conventions say; the
      contrib writes the socket's ``"host:port"`` text into ``server.address`` and the socket's
      port into ``server.port``.
    * The route is FastAPI's template (``path_format``): a Starlette path converter
      (``{id:int}``) is not part of it; the contrib writes the route's raw path.
    * An exception escaping before any answer was sent (a streaming body that fails
      midway, or no answer at all): status ERROR described by the exception's class name
      only (the message stays in the ``exception`` event, where the scrubber sees it), and in
      the stable modes ``error.type`` = its qualified class name; a request that ends without
      an answer and without an exception gets ``error.type`` = ``incomplete_response``. The
      contrib puts ``"{class}: {message}"`` into the status description and no ``error.type``.
    * Instrumentation scope ``otel.fastapi``; no ASGI ``receive``/``send`` child spans and no
      HTTP metrics (the collector derives them from the span).

Context
    The parent is extracted from the request headers with the global propagator
    (``OTEL_PROPAGATORS``, W3C trace context and baggage by default); a malformed
    ``traceparent`` starts a new trace. When a span is already current (an app called
    in-process inside a span), the span is an INTERNAL child of it, as with the contrib.
    The span is current while the app runs, so Redis, Kafka and other client spans are its
    children.

Failures of the telemetry itself
    Whatever this module's own code raises (extracting the context, building attributes,
    starting or ending the span) is caught: the app runs exactly once with the request and
    its answer and exceptions reach the server unchanged; the span is dropped (or ended as far
    as it got), and the first failure is logged at WARNING on the ``otel`` logger
    (:func:`otel._sdk.telemetry_failed`).

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

import contextlib
import functools
import os
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple

from fastapi import FastAPI
from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation._semconv import (
    _get_schema_url,
    _OpenTelemetrySemanticConventionStability,
    _OpenTelemetryStabilitySignalType,
    _report_new,
    _report_old,
    _StabilityMode,
)
from opentelemetry.instrumentation.asgi import collect_custom_headers_attributes
from opentelemetry.instrumentation.utils import http_status_to_status_code
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
from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
    ExcludeList,
    SanitizeValue,
    detect_synthetic_user_agent,
    get_custom_headers,
    normalise_request_header_name,
    normalise_response_header_name,
    parse_excluded_urls,
    redact_url,
    sanitize_method,
)

from otel._sdk import start_span, telemetry_failed
from otel._spans import error_type_of

__all__ = ["instrument", "is_instrumented", "uninstrument"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGICall = Callable[[FastAPI, Scope, Receive, Send], Awaitable[None]]

SCOPE_NAME = "otel.fastapi"
_MODULE = "fastapi"
#: FastAPI's opt-out key: with it in the scope, FastAPI's built-in telemetry stays out.
_FASTAPI_TELEMETRY_KEY = "fastapi.telemetry"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The old conventions' names (opentelemetry.semconv._incubating; spelled out, they are few).
_HTTP_SCHEME, _HTTP_HOST, _NET_HOST_PORT = "http.scheme", "http.host", "net.host.port"
_HTTP_FLAVOR, _HTTP_TARGET, _HTTP_URL = "http.flavor", "http.target", "http.url"
_HTTP_METHOD, _HTTP_SERVER_NAME, _HTTP_USER_AGENT = "http.method", "http.server_name", (
    "http.user_agent")
_NET_PEER_IP, _NET_PEER_PORT, _HTTP_STATUS_CODE = "net.peer.ip", "net.peer.port", (
    "http.status_code")
_USER_AGENT_SYNTHETIC_TYPE = "user_agent.synthetic.type"


class _Mode(NamedTuple):
    """Which attribute sets the span carries (``OTEL_SEMCONV_STABILITY_OPT_IN``), and which
    request and response headers it captures (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*``,
    read as the contrib's ASGI middleware reads them)."""

    old: bool
    new: bool
    request_headers: tuple[str, ...] = ()
    response_headers: tuple[str, ...] = ()
    sanitize: SanitizeValue | None = None


def _captured(message: Scope, mode: _Mode, response: bool) -> dict[str, list[str]]:
    """The configured headers of a request scope or response start message as attributes."""
    regexes = mode.response_headers if response else mode.request_headers
    if not regexes or mode.sanitize is None:
        return {}
    normalize = normalise_response_header_name if response else normalise_request_header_name
    return collect_custom_headers_attributes(dict(message), mode.sanitize, list(regexes), normalize)


def _text(value: bytes) -> str:
    """A header value as the contrib's ASGI getter decodes it (UTF-8, else escapes)."""
    try:
        return value.decode("utf-8")
    except ValueError:
        return value.decode("unicode_escape")


class _HeaderGetter(Getter[list[tuple[bytes, bytes]]]):
    """Reads propagation fields from the raw ASGI header list (lower-case byte names)."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [_text(value) for field, value in carrier if field == name]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [_text(field) for field, _ in carrier]


_GETTER = _HeaderGetter()


@functools.lru_cache(maxsize=256)
def _host_port(host: bytes, scheme: str) -> tuple[str, int]:
    """``server.address`` and ``server.port`` from a ``Host`` header (cached: it repeats)."""
    text = _text(host)
    if text.startswith("["):  # an IPv6 literal, [::1]:8080
        address, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port = text.partition(":")
    return address, int(port) if port.isdigit() else _DEFAULT_PORTS.get(scheme, 80)


@functools.lru_cache(maxsize=256)
def _user_agent(raw: bytes) -> tuple[str, str | None]:
    """The user agent text and its synthetic type (``test``, ``bot`` or None); cached."""
    text = _text(raw)
    return text, detect_synthetic_user_agent(text)


def _int(value: object) -> int | None:
    """``value`` as the contrib's ``set_int_attribute`` stores it (None: not stored)."""
    if not value:
        return None
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return None


def _request_attributes(scope: Scope, method: str, mode: _Mode) -> dict[str, Any]:
    """The attributes the contrib's ``collect_request_attributes`` gives the span at start
    (see the module docstring for ``server.address``/``server.port``)."""
    attributes: dict[str, Any] = {}
    scheme = scope.get("scheme")
    path = scope.get("path")
    raw_query = scope.get("query_string")
    query = raw_query.decode("utf-8", "replace") if raw_query else ""
    host = user_agent = None
    hosts: list[bytes] = []
    for field, value in scope["headers"]:
        if field == b"host":
            hosts.append(value)
        elif field == b"user-agent" and user_agent is None:
            user_agent = value
    host = hosts[0] if hosts else None
    server = scope.get("server") or ("0.0.0.0", 80)
    server_port = server[1]
    if mode.new:
        if scheme:
            attributes[URL_SCHEME] = scheme
        if host:
            attributes[SERVER_ADDRESS], attributes[SERVER_PORT] = _host_port(
                host, scheme or "http")
        elif scope.get("server"):
            attributes[SERVER_ADDRESS], attributes[SERVER_PORT] = server[0], _int(server_port)
    if mode.old:
        server_host = server[0] + (f":{server_port}" if str(server_port) != "80" else "")
        if scheme:
            attributes[_HTTP_SCHEME] = scheme
        if server_host:
            attributes[_HTTP_HOST] = server_host
        if _int(server_port) is not None:
            attributes[_NET_HOST_PORT] = _int(server_port)
    version = scope.get("http_version")
    if version:
        if mode.old:
            attributes[_HTTP_FLAVOR] = version
        if mode.new:
            attributes[NETWORK_PROTOCOL_VERSION] = version
    if path:
        if mode.old:
            attributes[_HTTP_TARGET] = path
        if mode.new:
            attributes[URL_PATH] = path
            if query:
                attributes[URL_QUERY] = query
    if mode.old:
        url_host = _text(host) if host else server_host
        url = f"{scope.get('scheme', 'http')}://{url_host}{path or ''}"
        if query:
            url += "?" + urllib.parse.unquote(query)
        attributes[_HTTP_URL] = redact_url(url)
    stripped, normalized = method.strip(), sanitize_method(method).strip()
    if method:
        if mode.new and stripped != normalized:
            attributes[HTTP_REQUEST_METHOD_ORIGINAL] = stripped
        if mode.old:
            attributes[_HTTP_METHOD] = normalized
        if mode.new:
            attributes[HTTP_REQUEST_METHOD] = normalized
    if hosts and mode.old:
        attributes[_HTTP_SERVER_NAME] = ",".join(_text(h) for h in hosts)
    if user_agent is not None:
        text, synthetic = _user_agent(user_agent)
        if text:
            if mode.old:
                attributes[_HTTP_USER_AGENT] = text
            if mode.new:
                attributes[USER_AGENT_ORIGINAL] = text
        if synthetic:
            attributes[_USER_AGENT_SYNTHETIC_TYPE] = synthetic
    client = scope.get("client")
    if client is not None:
        address, port = client[0], _int(client[1])
        if address:
            if mode.old:
                attributes[_NET_PEER_IP] = address
            if mode.new:
                attributes[CLIENT_ADDRESS] = address
        if port is not None:
            if mode.old:
                attributes[_NET_PEER_PORT] = port
            if mode.new:
                attributes[CLIENT_PORT] = port
    return {key: value for key, value in attributes.items() if value is not None}


class _Request(NamedTuple):
    """A traced request's span, the context token to detach, and its method."""

    span: trace.Span
    token: object
    method: str
    server: bool


def _start(tracer: Tracer, mode: _Mode, scope: Scope) -> _Request:
    """Extract the parent, start the span and make it current (the contrib's
    ``_start_internal_or_server_span``: INTERNAL under an already current span)."""
    method = scope["method"]
    normalized = sanitize_method(method.strip())
    if trace.get_current_span() is trace.INVALID_SPAN:
        parent = propagate.extract(scope["headers"], getter=_GETTER)
        kind = SpanKind.SERVER
    else:
        parent = context.get_current()
        kind = SpanKind.INTERNAL
    name = "HTTP" if normalized == "_OTHER" else normalized
    attributes = _request_attributes(scope, method, mode)
    if kind is SpanKind.SERVER:
        attributes.update(_captured(scope, mode, response=False))
    span = start_span(tracer, name, parent, kind, attributes)
    return _Request(span, context.attach(trace.set_span_in_context(span, parent)), name,
                    kind is SpanKind.SERVER)


def _server_spans(call: ASGICall, tracer: Tracer, excluded: ExcludeList | None,
                  mode: _Mode) -> ASGICall:
    """``call`` (``FastAPI.__call__``) with a SERVER span around each HTTP request; a plain
    function, so that it binds as a method with no extra coroutine per request."""

    async def __call__(app: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        request: _Request | None = None
        try:
            if app.__dict__.get("_is_instrumented_by_opentelemetry"):
                _remove_contrib(app)
            if scope["type"] == "http" and _FASTAPI_TELEMETRY_KEY not in scope:
                scope[_FASTAPI_TELEMETRY_KEY] = None
                if excluded is None or not excluded.url_disabled(_url(scope)):
                    request = _start(tracer, mode, scope)
            elif scope["type"] == "websocket":
                scope.setdefault(_FASTAPI_TELEMETRY_KEY, None)
        except Exception:
            telemetry_failed(_MODULE, "starting the request span")
        if request is None:
            await call(app, scope, receive, send)
            return
        status_code = 0

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status_code
            if message.get("type") == "http.response.start":
                status_code = message.get("status") or 0
                if mode.response_headers and request.server:
                    try:
                        request.span.set_attributes(_captured(message, mode, response=True))
                    except Exception:
                        telemetry_failed(_MODULE, "capturing the response headers")
            await send(message)

        try:
            await call(app, scope, receive, send_status)
        except BaseException as exc:
            _end(request, scope, status_code, exc, mode)
            raise
        _end(request, scope, status_code, None, mode)

    return __call__


def _remove_contrib(app: FastAPI) -> None:
    """Take the contrib instrumentation's middleware out of ``app``.

    ``opentelemetry-instrument`` replaces ``fastapi.FastAPI`` with the contrib subclass at
    start-up, so a module that imported ``FastAPI`` before :func:`otel.configure` creates apps
    that instrument themselves; this removes it on their first request, before any span."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.uninstrument_app(app)


def _url(scope: Scope) -> str:
    host = _text(next((v for f, v in scope["headers"] if f == b"host"), b""))
    query = scope.get("query_string", b"").decode("utf-8", "replace")
    url = f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{scope['path']}"
    return f"{url}?{query}" if query else url


def _end(request: _Request, scope: Scope, status_code: int, error: BaseException | None,
         mode: _Mode) -> None:
    """Finish the span; never raises (a failure is reported and the span ended if possible)."""
    try:
        _finish(request.span, scope, request.method, status_code, error, mode)
    except Exception:
        telemetry_failed(_MODULE, "ending the request span")
        with contextlib.suppress(Exception):  # already reported; else the span is dropped
            request.span.end()
    finally:
        context.detach(request.token)  # type: ignore[arg-type]


def _route_template(scope: Scope) -> str | None:
    """The template of the route that served the request; for a request answered before
    routing (a middleware's 401, 429 or 500), the route it was addressed to, matched as the
    router (and the contrib) would: the first full match, else the first partial one."""
    route = scope.get("route")
    if route is None:
        from starlette.routing import Match

        matched = {Match.FULL: None, Match.PARTIAL: None}
        for candidate in getattr(getattr(scope.get("app"), "router", None), "routes", ()):
            match = candidate.matches(scope)[0]
            if match in matched and matched[match] is None:
                matched[match] = candidate
        route = matched[Match.FULL] or matched[Match.PARTIAL]
    return getattr(route, "path_format", None)


def _finish(span: trace.Span, scope: Scope, name: str, status_code: int,
            error: BaseException | None, mode: _Mode) -> None:
    attributes: dict[str, Any] = {}
    route = _route_template(scope)
    if route:
        attributes[HTTP_ROUTE] = route
        span.update_name(f"{name} {route}")
    if status_code:
        if mode.old:
            attributes[_HTTP_STATUS_CODE] = status_code
        if mode.new:
            attributes[HTTP_RESPONSE_STATUS_CODE] = status_code
    failed = http_status_to_status_code(status_code, server_span=True) is StatusCode.ERROR
    if status_code and failed:
        if mode.new:
            attributes[ERROR_TYPE] = str(status_code)
        if error is not None:
            span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR))
    elif error is not None:
        if mode.new:
            attributes[ERROR_TYPE] = error_type_of(error)
        span.record_exception(error)
        # The message stays in the exception event, whose attributes the scrubber sees; a
        # status description is exported as is.
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    elif not status_code:
        if mode.new:
            attributes[ERROR_TYPE] = "incomplete_response"
        span.set_status(Status(StatusCode.ERROR))
    span.set_attributes(attributes)
    span.end()


_original_call: ASGICall | None = None


def _excluded_urls() -> ExcludeList | None:
    """The contrib instrumentation's exclusion list from the environment; None when empty."""
    raw = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get(
        "OTEL_PYTHON_EXCLUDED_URLS")
    return parse_excluded_urls(raw) if raw and raw.strip() else None


def _opt_in_mode() -> _StabilityMode:
    """The HTTP ``OTEL_SEMCONV_STABILITY_OPT_IN`` mode, read as the contrib reads it."""
    _OpenTelemetrySemanticConventionStability._initialize()  # type: ignore[no-untyped-call]
    return _OpenTelemetrySemanticConventionStability._get_opentelemetry_stability_opt_in_mode(
        _OpenTelemetryStabilitySignalType.HTTP)


def instrument(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace every FastAPI app's HTTP requests (see the module docstring); idempotent."""
    global _original_call
    if _original_call is not None:
        return
    opt_in = _opt_in_mode()
    tracer = trace.get_tracer(SCOPE_NAME, tracer_provider=tracer_provider,
                              schema_url=_get_schema_url(opt_in))
    excluded = _excluded_urls()
    mode = _Mode(
        _report_old(opt_in), _report_new(opt_in),
        tuple(get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST)),
        tuple(get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE)),
        SanitizeValue(get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)),
    )
    _original_call = FastAPI.__call__
    FastAPI.__call__ = _server_spans(  # type: ignore[method-assign,assignment]
        _original_call, tracer, excluded, mode)


def uninstrument() -> None:
    """Restore ``FastAPI.__call__``."""
    global _original_call
    if _original_call is not None:
        FastAPI.__call__ = _original_call  # type: ignore[method-assign,assignment]
        _original_call = None


def is_instrumented() -> bool:
    """True between :func:`instrument` and :func:`uninstrument`."""
    return _original_call is not None

