"""Redis client spans: one CLIENT span per command or pipeline, made cheaply.

Why not the contrib instrumentation
    ``opentelemetry-instrumentation-redis`` re-reads the connection settings, sets each
    attribute with its own locked call and makes every span current: on the benchmark machine
    it added 75-100 us of CPU per command, more than the command itself
    (``docs/benchmarks.md``). This module makes the contrib's span (differences below) with
    one attribute map, the connection part cached per connection pool.

What the span carries: the contrib's span, with the differences listed below
    ``OTEL_SEMCONV_STABILITY_OPT_IN`` is read as the contrib reads it (its
    ``_get_semconv_opt_in_modes`` for the ``database`` and ``http`` signals, at
    :func:`instrument`), and the attributes are written with the contrib's own ``_semconv``
    setters. With the services' ``http``: name the command (``INCRBY``), or for a pipeline its
    commands joined by spaces; ``db.system`` = ``redis``, ``db.statement`` = the command with
    every argument replaced by ``?`` (``INCRBY ? ?``; pipelines: one line per command; at most
    1,000 characters), ``db.redis.args_length`` (commands) or ``db.redis.pipeline_length``
    (pipelines), ``db.redis.database_index``, ``server.address`` and ``server.port`` (or the
    socket path), ``network.transport`` (``tcp`` or ``unix``). Unset: ``net.peer.name``,
    ``net.peer.port`` and ``net.transport`` (``ip_tcp``/``other``) instead of the three
    ``server``/``network`` ones; ``http/dup``: both. ``database``: ``db.system.name`` and
    ``db.query.text`` instead of ``db.system``/``db.statement``, no database index;
    ``database/dup``: both. An error sets status ERROR and an ``exception`` event; a
    ``WatchError`` of a pipeline leaves the status unset, as with the contrib.

Differences from the contrib (deliberate; ``docs/conventions.md`` lists them too)
    * An error also sets ``error.type`` (its qualified class name, as every failing span of
      the project does) and the status description is the class name only; the contrib
      writes no ``error.type`` and ``"{class}: {message}"`` as the description (the message
      stays in the ``exception`` event, where the scrubber sees it).
    * A ``NoScriptError`` (``EVALSHA`` of a script the server has not cached, after a Redis
      restart or on first use; the client loads the script and runs it again) and a
      ``WatchError`` of a single command are signals the client acts on, not failures: status
      unset, no event; the contrib marks them ERROR.
    * Cluster clients: ``db.system`` (the contrib's cluster spans carry no connection
      attributes at all).
    * No RediSearch extras (``redis.search``/``redis.create_index`` span names and their
      attributes); a command name given as bytes is decoded (the contrib writes ``b'...'``).
    * Instrumentation scope ``otel.redis``; the span is not made current (a Redis command has
      no child spans).

Failures of the telemetry itself
    Whatever this module's own code raises while starting or ending a span is caught: the
    command or pipeline runs exactly once and returns or raises what it would without
    instrumentation; the span is dropped (or ended as far as it got), and the first failure is
    logged at WARNING on the ``otel`` logger (:func:`otel._sdk.telemetry_failed`).

Scope
    ``redis.Redis`` and ``redis.asyncio.Redis`` commands, pipelines and transactions (scripts
    run as ``EVALSHA`` commands), and the cluster clients ``redis.RedisCluster`` and
    ``redis.asyncio.RedisCluster``: commands and cluster pipelines, as the contrib
    instrumentation covers them. A cluster client has no single server, so its spans carry
    ``db.system`` but no database index, address, port or transport (the contrib's cluster
    spans carry none of the four, nor ``db.system``); the node commands a cluster client sends
    while discovering the cluster (``CLUSTER SLOTS``) are spans of the node's ``Redis`` client.
    The span is not made current: a Redis command has no child spans.

Usage
    :func:`otel.configure` calls :func:`instrument` in both modes, after removing the contrib
    instrumentation that ``opentelemetry-instrument`` applied; :func:`uninstrument` restores
    the patched methods.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from opentelemetry import trace
from opentelemetry.instrumentation._semconv import (
    _get_schema_url_for_signal_types,
    _get_semconv_opt_in_modes,
    _OpenTelemetryStabilitySignalType,
    _set_db_redis_database_index,
    _set_db_statement,
    _set_db_system,
    _set_http_net_peer_name_client,
    _set_http_peer_port_client,
    _set_net_transport,
    _StabilityMode,
)
from opentelemetry.trace import Span, SpanKind, Tracer

from otel._sdk import start_span, telemetry_failed
from otel._spans import fail_span

__all__ = ["instrument", "is_instrumented", "uninstrument"]

SCOPE_NAME = "otel.redis"
_MODULE = "redis"
#: The ``database`` and ``http`` opt-in modes (set by :func:`instrument`).
_db_mode = _http_mode = _StabilityMode.DEFAULT
_MAX_STATEMENT = 1000
_CONNECTIONS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
#: Errors the client recovers from by design (see "What the span carries").
_SIGNALS = (redis.WatchError, redis.exceptions.NoScriptError)


@functools.lru_cache(maxsize=1024)
def _statement(command: str, args_length: int) -> str:
    statement = " ".join([command] + ["?"] * (args_length - 1))
    if len(statement) > _MAX_STATEMENT:
        statement = statement[: _MAX_STATEMENT - 3] + "..."
    return statement


def _connection_attributes(client: Any) -> dict[str, Any]:
    """``db.system``, database index, address, port and transport of ``client``'s pool (the
    contrib's ``_extract_conn_attributes``, cached per pool)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        system: dict[str, Any] = {}
        _set_db_system(system, "redis", _db_mode)
        return system
    cached = _CONNECTIONS.get(pool)
    if cached is None:
        kwargs = getattr(pool, "connection_kwargs", {})
        cached = {}
        _set_db_system(cached, "redis", _db_mode)
        _set_db_redis_database_index(cached, kwargs.get("db") or 0, _db_mode)
        if "path" in kwargs:
            _set_http_net_peer_name_client(cached, kwargs.get("path", ""), _http_mode)
            _set_net_transport(cached, "other", "unix", _http_mode)
        else:
            _set_http_net_peer_name_client(cached, kwargs.get("host", "localhost"), _http_mode)
            _set_http_peer_port_client(cached, kwargs.get("port", 6379), _http_mode)
            _set_net_transport(cached, "ip_tcp", "tcp", _http_mode)
        _CONNECTIONS[pool] = cached
    return cached


def _command_name(args: Sequence[Any]) -> str:
    if not args:
        return "redis"
    name = args[0]
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


SpanMaker = Callable[[Tracer, Any, tuple[Any, ...]], Span]


def _command_span(tracer: Tracer, client: Any, args: tuple[Any, ...]) -> Span:
    name = _command_name(args)
    attributes = dict(_connection_attributes(client))
    _set_db_statement(attributes, _statement(name, len(args)), _db_mode)
    attributes["db.redis.args_length"] = len(args)
    return start_span(tracer, name, None, SpanKind.CLIENT, attributes)


def _queued_commands(pipeline: Any) -> list[tuple[Any, ...]]:
    """The argument tuples of the commands queued in ``pipeline``, in order.

    A client pipeline queues ``(args, options)`` pairs in ``command_stack``; a cluster pipeline
    (redis-py 6 and later) queues ``PipelineCommand`` objects in its execution strategy.
    """
    strategy = getattr(pipeline, "_execution_strategy", None)
    if strategy is not None:
        return [command.args for command in getattr(strategy, "_command_queue", [])]
    return [args for args, _ in getattr(pipeline, "command_stack", [])]


def _pipeline_span(tracer: Tracer, pipeline: Any, _args: tuple[Any, ...]) -> Span:
    commands = _queued_commands(pipeline)
    names = [_command_name(args) for args in commands]
    statement = "\n".join(_statement(n, len(args)) for n, args in zip(names, commands,
                                                                      strict=True))
    if len(statement) > _MAX_STATEMENT:
        statement = statement[: _MAX_STATEMENT - 3] + "..."
    attributes = dict(_connection_attributes(pipeline))
    _set_db_statement(attributes, statement, _db_mode)
    attributes["db.redis.pipeline_length"] = len(commands)
    return start_span(tracer, " ".join(names) or "redis", None, SpanKind.CLIENT, attributes)


def _start(tracer: Tracer, make_span: SpanMaker, client: Any,
           args: tuple[Any, ...]) -> Span | None:
    """The command's span; None (and the failure reported) if making it raised."""
    try:
        return make_span(tracer, client, args)
    except Exception:
        telemetry_failed(_MODULE, "starting the command span")
        return None


def _end(span: Span | None, error: BaseException | None) -> None:
    """End ``span`` (marked failed by ``error``); never raises."""
    if span is None:
        return
    try:
        if error is not None and not isinstance(error, _SIGNALS):
            fail_span(span, error)
        span.end()
    except Exception:
        telemetry_failed(_MODULE, "ending the command span")
        with contextlib.suppress(Exception):  # already reported; else the span is dropped
            span.end()


def _async_traced(tracer: Tracer, original: Callable[..., Any],
                  make_span: SpanMaker) -> Callable[..., Any]:
    @functools.wraps(original)
    async def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = _start(tracer, make_span, self, args)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            _end(span, exc)
            raise
        _end(span, None)
        return result

    return traced


def _sync_traced(tracer: Tracer, original: Callable[..., Any],
                 make_span: SpanMaker) -> Callable[..., Any]:
    @functools.wraps(original)
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = _start(tracer, make_span, self, args)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            _end(span, exc)
            raise
        _end(span, None)
        return result

    return traced


Wrap = Callable[[Tracer, Callable[..., Any], SpanMaker], Callable[..., Any]]
#: (class, method name, wrapper, span maker) for every patched method.
_TARGETS: tuple[tuple[type, str, Wrap, SpanMaker], ...] = (
    (redis.asyncio.Redis, "execute_command", _async_traced, _command_span),
    (redis.asyncio.client.Pipeline, "immediate_execute_command", _async_traced, _command_span),
    (redis.asyncio.client.Pipeline, "execute", _async_traced, _pipeline_span),
    (redis.Redis, "execute_command", _sync_traced, _command_span),
    (redis.client.Pipeline, "immediate_execute_command", _sync_traced, _command_span),
    (redis.client.Pipeline, "execute", _sync_traced, _pipeline_span),
    (redis.asyncio.cluster.RedisCluster, "execute_command", _async_traced, _command_span),
    (redis.asyncio.cluster.ClusterPipeline, "execute", _async_traced, _pipeline_span),
    (redis.cluster.RedisCluster, "execute_command", _sync_traced, _command_span),
    (redis.cluster.ClusterPipeline, "execute", _sync_traced, _pipeline_span),
)
_originals: dict[tuple[type, str], Callable[..., Any]] = {}


def instrument(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace Redis commands and pipelines (see the module docstring); idempotent."""
    global _db_mode, _http_mode
    if _originals:
        return
    signals = (_OpenTelemetryStabilitySignalType.DATABASE, _OpenTelemetryStabilitySignalType.HTTP)
    modes = _get_semconv_opt_in_modes(signals)
    _db_mode = modes[_OpenTelemetryStabilitySignalType.DATABASE]
    _http_mode = modes[_OpenTelemetryStabilitySignalType.HTTP]
    _CONNECTIONS.clear()
    tracer = trace.get_tracer(SCOPE_NAME, tracer_provider=tracer_provider,
                              schema_url=_get_schema_url_for_signal_types(list(signals)))
    for cls, name, wrap, make_span in _TARGETS:
        original = cls.__dict__[name]
        _originals[(cls, name)] = original
        setattr(cls, name, wrap(tracer, original, make_span))


def uninstrument() -> None:
    """Restore the patched methods."""
    for (cls, name), original in list(_originals.items()):
        setattr(cls, name, original)
    _originals.clear()


def is_instrumented() -> bool:
    """True between :func:`instrument` and :func:`uninstrument`."""
    return bool(_originals)

