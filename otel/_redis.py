"""Redis client spans: one CLIENT span per command or pipeline, made cheaply.

Why not the contrib instrumentation
    ``opentelemetry-instrumentation-redis`` re-reads the connection settings, sets each
    attribute with its own locked call and makes every span current: on the benchmark machine
    it added 75-100 us of CPU per command, more than the command itself
    (``docs/benchmarks.md``). This module makes the same span with one attribute map, the
    connection part cached per connection pool.

What the span carries (the attributes the contrib instrumentation emits today, so that the
runbook's Jaeger links keep matching)
    Name: the command (``INCRBY``), or for a pipeline its commands joined by spaces.
    ``db.system`` = ``redis``, ``db.statement`` = the command with every argument replaced by
    ``?`` (``INCRBY ? ?``; pipelines: one line per command; at most 1,000 characters),
    ``db.redis.args_length`` (commands) or ``db.redis.pipeline_length`` (pipelines),
    ``db.redis.database_index``, ``server.address`` and ``server.port`` (or the socket path),
    ``network.transport`` (``tcp`` or ``unix``). An error sets status ERROR, ``error.type``
    and an ``exception`` event. Two errors are signals the client acts on, not failures, and
    leave the span's status unset: a ``WatchError`` (an optimistic transaction to retry) and a
    ``NoScriptError`` (``EVALSHA`` of a script the server has not cached, after a Redis restart
    or on first use; the client loads the script and runs it again). Argument values never
    leave the process.

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

import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from opentelemetry import trace
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from otel._sdk import start_span
from otel._spans import error_type_of

__all__ = ["instrument", "is_instrumented", "uninstrument"]

SCOPE_NAME = "otel.redis"
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
    """``db.system``, database index, address, port and transport of ``client``'s pool."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return {"db.system": "redis"}
    cached = _CONNECTIONS.get(pool)
    if cached is None:
        kwargs = getattr(pool, "connection_kwargs", {})
        cached = {"db.system": "redis", "db.redis.database_index": kwargs.get("db") or 0}
        if "path" in kwargs:
            cached |= {"server.address": kwargs["path"], "network.transport": "unix"}
        else:
            cached |= {"server.address": kwargs.get("host", "localhost"),
                       "server.port": kwargs.get("port", 6379), "network.transport": "tcp"}
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
    attributes = {**_connection_attributes(client),
                  "db.statement": _statement(name, len(args)),
                  "db.redis.args_length": len(args)}
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
    attributes = {**_connection_attributes(pipeline), "db.statement": statement,
                  "db.redis.pipeline_length": len(commands)}
    return start_span(tracer, " ".join(names) or "redis", None, SpanKind.CLIENT, attributes)


def _end(span: Span, error: BaseException | None) -> None:
    if error is not None and not isinstance(error, _SIGNALS):
        span.record_exception(error)
        span.set_attributes({ERROR_TYPE: error_type_of(error)})
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


def _async_traced(tracer: Tracer, original: Callable[..., Any],
                  make_span: SpanMaker) -> Callable[..., Any]:
    @functools.wraps(original)
    async def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = make_span(tracer, self, args)
        error: BaseException | None = None
        try:
            return await original(self, *args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _end(span, error)

    return traced


def _sync_traced(tracer: Tracer, original: Callable[..., Any],
                 make_span: SpanMaker) -> Callable[..., Any]:
    @functools.wraps(original)
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = make_span(tracer, self, args)
        error: BaseException | None = None
        try:
            return original(self, *args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _end(span, error)

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
    if _originals:
        return
    tracer = trace.get_tracer(SCOPE_NAME, tracer_provider=tracer_provider)
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

