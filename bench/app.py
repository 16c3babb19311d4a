"""A small FastAPI app with the gateway's shape, for the overhead and memory benchmarks.

Routes:

* ``GET /v1/ping`` - the trivial route: returns ``{"status": "ok"}``.
* ``POST /v1/sessions/{session_id}/messages`` - the message route, as in the gateway: bearer
  API key check, JSON body ``{"text": 1..4000 chars}`` validated by pydantic, a per-minute rate
  counter in the real Redis (``INCR`` + ``EXPIRE``), the event produced to Kafka topic
  ``$BENCH_TOPIC`` with :func:`otel.kafka.send_event` (idempotent producer, acks=all, awaited),
  answer 202 ``{"message_id", "trace_id"}``.
* ``GET /metrics`` - only in the ``prometheus`` variant.

Why not the real gateway: ``services.gateway`` always calls ``otel.configure`` (so it has no
uninstrumented mode) and its message route feeds ``conversation.events``, which the shared
stack's worker would turn into SLM calls under wrk load.

Variant (``$BENCH_VARIANT``), started by :mod:`bench.overhead`:

* ``none`` - no telemetry at all (plain ``python -m bench.app``).
* ``project`` - under ``opentelemetry-instrument`` with the services' environment, plus
  ``otel.configure()`` at import (scrubbing, JSON logs, OTLP log scrubbing), as
  :mod:`services.common.telemetry` does.
* ``project-no-client-spans``, ``project-no-span-export`` - ``project`` minus one part (see
  :mod:`bench.overhead`).
* ``otel-defaults`` - under ``opentelemetry-instrument`` with the contrib alone (not this
  package's distro), only the service name and the
  endpoint set.
* ``prometheus`` - the seed's prometheus_client ``track_request`` decorator on each route.

Run: ``python -m bench.app --port 18080``.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import wraps
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Response
from pydantic import BaseModel, Field

VARIANT = os.environ.get("BENCH_VARIANT", "none")
TOPIC = os.environ.get("BENCH_TOPIC", "bench.messages")
API_KEY = "bench-key"

if VARIANT.startswith("project"):
    import otel

    TELEMETRY = otel.configure(service_name=os.environ.get("OTEL_SERVICE_NAME", "bench-app"))

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_METRICS: dict[str, Any] = {}


def track_request(method: str, endpoint: str) -> Callable[[F], F]:
    """The seed's decorator (sprint-c-observability.md 2.1), or nothing outside its variant."""
    if VARIANT != "prometheus":
        return lambda func: func
    from prometheus_client import Counter, Histogram

    if not _METRICS:
        _METRICS["requests"] = Counter(
            "http_requests_total", "Total HTTP requests", ["method", "endpoint", "status"])
        _METRICS["duration"] = Histogram(
            "http_request_duration_seconds", "HTTP request duration", ["method", "endpoint"],
            buckets=[0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0])
    requests, duration = _METRICS["requests"], _METRICS["duration"]

    def decorator(func: F) -> F:
        @wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            status = 500
            try:
                result = await func(*args, **kwargs)
                status = result.status_code if hasattr(result, "status_code") else 200
                return result
            finally:
                requests.labels(method=method, endpoint=endpoint, status=str(status)).inc()
                duration.labels(method=method, endpoint=endpoint).observe(time.time() - start)
        return wrapper  # type: ignore[return-value]
    return decorator



class Message(BaseModel):
    """The message body."""

    text: str = Field(min_length=1, max_length=4000)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Connect Redis and the Kafka producer."""
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaProducer

    app.state.redis = aioredis.from_url("redis://127.0.0.1:6379/0")
    app.state.producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9092",
                                          enable_idempotence=True, acks="all")
    await app.state.producer.start()
    try:
        yield
    finally:
        await app.state.producer.stop()
        await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/v1/ping")
@track_request("GET", "/v1/ping")
async def ping() -> dict[str, str]:
    """The trivial route."""
    return {"status": "ok"}


@app.post("/v1/sessions/{session_id}/messages", status_code=202)
@track_request("POST", "/v1/sessions/{session_id}/messages")
async def post_message(session_id: str, body: Message,
                       authorization: str | None = Header(default=None)) -> dict[str, str]:
    """The message route (module docstring)."""
    from opentelemetry import trace

    from otel.kafka import send_event

    if authorization != f"Bearer {API_KEY}":
        raise HTTPException(401, "invalid_api_key")
    key = f"bench:ratelimit:{int(time.time() // 60)}"
    count = await app.state.redis.incr(key)
    if count == 1:
        await app.state.redis.expire(key, 120)
    message_id = uuid.uuid4().hex
    await send_event(app.state.producer, TOPIC,
                     {"session_id": session_id, "message_id": message_id, "text": body.text},
                     key=session_id)
    ctx = trace.get_current_span().get_span_context()
    return {"message_id": message_id,
            "trace_id": format(ctx.trace_id, "032x") if ctx.is_valid else ""}


if VARIANT == "prometheus":

    @app.get("/metrics")
    async def metrics() -> Response:
        """The prometheus_client exposition."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def main() -> None:
    """Serve on 127.0.0.1:--port with one uvicorn worker, no access log."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args()
    gc.freeze()  # as services.common.http.serve does, in every variant (docs/setup.md)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
