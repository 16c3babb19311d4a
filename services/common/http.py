"""HTTP pieces shared by the services: JSON error bodies, health/readiness, running uvicorn.

Every error answer has the body ``{"error": "<code>", "message": "<text>"}`` (plus
``"details"`` for validation errors), including FastAPI's own 404/405/422 answers.

``/healthz`` answers 200 ``{"status": "ok"}`` while the process serves. ``/readyz`` runs every
readiness check concurrently and answers 200 ``{"status": "ready", "checks": {...}}`` or 503
``{"status": "not_ready", "checks": {...}}`` naming each failing dependency.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

if TYPE_CHECKING:
    from otel.dlq import EventConsumer

_LOG = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]


class ApiError(Exception):
    """An error answer: HTTP ``status`` with body ``{"error": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": code, "message": message, **extra}


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


def install_error_handlers(app: FastAPI) -> None:
    """Make every error answer of ``app`` a JSON ``{"error", "message"}`` body."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        if isinstance(exc.detail, str):
            body = error_body(code, exc.detail)
        else:
            body = error_body(code, "request rejected", details=exc.detail)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(
            error_body("invalid_request", "the request does not match the schema",
                       details=details),
            status_code=422,
        )


def add_health_routes(app: FastAPI, checks: Mapping[str, Check]) -> None:
    """Add ``/healthz`` and ``/readyz`` (which runs ``checks``) to ``app``."""

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        names = list(checks)
        results = await asyncio.gather(*(checks[n]() for n in names), return_exceptions=True)
        status = {n: (r is True) for n, r in zip(names, results, strict=True)}
        ready = all(status.values())
        body = {"status": "ready" if ready else "not_ready",
                "checks": {n: "ok" if ok else "unreachable" for n, ok in status.items()}}
        return JSONResponse(body, status_code=200 if ready else 503)


async def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn until cancelled or a signal stops it.

    Everything imported and built so far is moved out of the cyclic garbage collector's
    reach first (``gc.freeze()``): telemetry makes many short-lived objects per request, and
    each full collection otherwise walks the whole start-up heap (see docs/setup.md)."""
    gc.freeze()
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    await server.serve()


async def consume_and_serve(
    consumer: EventConsumer, app: FastAPI, host: str, port: int, *, name: str,
    on_stopping: Callable[[], object] = lambda: None,
) -> None:
    """Run ``consumer`` and serve ``app`` until either ends (a signal stops the server), then
    stop both; a crashed consumer or server ends the process with its error. ``on_stopping``
    runs first, e.g. to release a handler held by a fault switch so the consumer can stop."""
    consuming = asyncio.create_task(consumer.run(), name=name)
    serving = asyncio.create_task(serve(app, host, port))
    try:
        done, _ = await asyncio.wait({consuming, serving}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        on_stopping()
        serving.cancel()
        await consumer.stop()
        await asyncio.gather(consuming, serving, return_exceptions=True)
