"""The gateway's FastAPI application (see :mod:`services.gateway` for the API)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, TypeVar

import asyncpg
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from fastapi import Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from opentelemetry import context, trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from otel.dlq import InvalidEventError
from otel.kafka import send_event
from services.common import db
from services.common.http import (
    ApiError,
    add_health_routes,
    error_body,
    install_error_handlers,
)
from services.common.kafka import (
    CONVERSATION_EVENTS,
    CONVERSATION_REPLIES,
    TopicTail,
    ensure_topics,
    kafka_reachable,
    new_producer,
)
from services.common.settings import Settings
from services.common.telemetry import (
    DEBUG_TRACE_HEADER,
    current_trace_id,
    keep_context,
    keep_requested,
)
from services.faults import (
    DeterministicRatio,
    FaultState,
    GatewayFaults,
    faults_router,
    require_loopback,
)
from services_instrumentation.gateway import GatewayInstruments, create_instruments

_LOG = logging.getLogger("services.gateway")

MAX_BODY_BYTES: Final = 16 * 1024
REPLY_GUARD_GROUP: Final = "gateway-dlq-guard"
MAX_TEXT_CHARS: Final = 4000
_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
M = TypeVar("M", bound=BaseModel)


class SessionCreate(BaseModel):
    """Body of ``POST /v1/sessions``."""

    model_config = ConfigDict(extra="forbid")
    persona_id: str = Field("default", pattern=_NAME)


class MessageCreate(BaseModel):
    """Body of ``POST /v1/sessions/{session_id}/messages``."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    # Optional cap on the reply's SLM tokens, 1..SLM_MAX_TOKENS (the upper bound is checked
    # against the settings in post_message); absent: the worker uses SLM_MAX_TOKENS.
    max_reply_tokens: int | None = Field(None, ge=1, strict=True)


class TenantCreate(BaseModel):
    """Body of ``POST /admin/tenants``."""

    model_config = ConfigDict(extra="forbid")
    tenant_id: str = Field(pattern=_NAME)
    token_budget: int = Field(100_000, ge=0)
    persona_token_budget: int = Field(50_000, ge=0)
    allowed_tools: list[str] = Field(default_factory=lambda: ["calculate", "stats"])
    allowed_personas: list[str] = Field(default_factory=lambda: ["default"])
    rate_limit_per_minute: int = Field(600, gt=0)
    status: str = Field("active", pattern="^(active|suspended)$")


def hash_key(api_key: str) -> str:
    """Return the sha256 hex digest under which ``api_key`` is stored."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


_REPLY_UUIDS: Final = ("session_id", "message_id", "reply_to")
_REPLY_STRINGS: Final = ("status", "intent", "text", "trace_id")


def validate_reply(event: dict[str, Any]) -> None:
    """Reject a ``conversation.replies`` event that is not a WebSocket frame of the API.

    ``session_id``, ``message_id`` and ``reply_to`` must be UUID strings; ``status``,
    ``intent``, ``text`` and ``trace_id`` strings. The gateway's DLQ guard dead-letters what
    this rejects; its tail delivers the rest (see :class:`services.common.kafka.TopicTail`).
    """
    for name in _REPLY_UUIDS:
        value = event.get(name)
        if not isinstance(value, str):
            raise InvalidEventError(f"field {name!r} must be a UUID string")
        try:
            uuid.UUID(value)
        except ValueError as exc:
            raise InvalidEventError(f"field {name!r} must be a UUID string") from exc
    for name in _REPLY_STRINGS:
        if not isinstance(event.get(name), str):
            raise InvalidEventError(f"field {name!r} must be a string")


@dataclass
class ReplyHub:
    """Fan-out of ``conversation.replies`` records to the WebSockets of each session."""

    subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(set)
    )

    def subscribe(self, session_id: str) -> asyncio.Queue[dict[str, Any]]:
        """Return a new queue receiving the replies of ``session_id``."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.subscribers[session_id].add(queue)
        return queue

    def unsubscribe(self, session_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop delivering to ``queue``."""
        queues = self.subscribers.get(session_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.subscribers[session_id]

    async def deliver(self, event: dict[str, Any]) -> None:
        """Hand a valid reply event to every subscriber of its session (dropped when one is
        full); a reply for a session with no WebSocket here is another instance's."""
        session_id = event["session_id"]
        for queue in list(self.subscribers.get(session_id, ())):
            if queue.full():
                _LOG.warning("websocket queue full; reply dropped",
                             extra={"session_id": session_id})
            else:
                queue.put_nowait(event)


@dataclass
class Gateway:
    """The gateway's connections and state, created in the application's lifespan."""

    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    producer: AIOKafkaProducer
    instruments: GatewayInstruments
    hub: ReplyHub


class DebugTraceMiddleware:
    """Always-keep the trace of a request carrying ``X-Soma-Debug-Trace: 1``.

    Marks the server span and runs the request under the ``soma.sampling.keep`` baggage, so
    every span below it, here and in the services the request reaches, carries the flag.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, under the keep baggage when the header asks for it."""
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            raw = headers.get(DEBUG_TRACE_HEADER.encode())
            if keep_requested(raw.decode("latin-1") if raw is not None else None):
                trace.get_current_span().set_attribute("soma.sampling.keep", True)
                token = context.attach(keep_context())
                try:
                    await self.app(scope, receive, send)
                finally:
                    context.detach(token)
                return
        await self.app(scope, receive, send)


class InjectedFaultMiddleware:
    """Answer 500 to the share of ``/v1/`` requests set by ``gateway_5xx_ratio``."""

    def __init__(self, app: ASGIApp, ratio: DeterministicRatio) -> None:
        self.app = app
        self.ratio = ratio

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Fail the request with a real 500 when the ratio says so."""
        if (
            scope["type"] == "http"
            and str(scope.get("path", "")).startswith("/v1/")
            and self.ratio.next_fails()
        ):
            response = JSONResponse(
                error_body("injected_fault", "gateway_5xx_ratio fault switch is on"),
                status_code=500,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def read_model(request: Request, model: type[M], *, allow_empty: bool = False) -> M:
    """Read the JSON body of ``request`` (at most :data:`MAX_BODY_BYTES`) as ``model``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip() and allow_empty:
        return model()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False)
        ]
        raise ApiError422(details) from exc


class ApiError422(ApiError):
    """A body that is JSON but does not match the schema (details list each problem)."""

    def __init__(self, details: list[dict[str, Any]]) -> None:
        super().__init__(422, "invalid_request", "the request does not match the schema")
        self.details = details


def gateway_of(request: Request) -> Gateway:
    """The :class:`Gateway` of the running application."""
    gw: Gateway = request.app.state.gateway
    return gw


async def authenticate_headers(gw: Gateway, authorization: str | None) -> str:
    """Return the tenant of the ``Authorization: Bearer`` key; count the attempt."""
    if not authorization:
        gw.instruments.auth_attempt(result="missing")
        raise ApiError(401, "missing_api_key", "send Authorization: Bearer <api key>")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > 200:
        gw.instruments.auth_attempt(result="failure")
        raise ApiError(401, "invalid_api_key", "the API key is not valid")
    try:
        tenant = await gw.pool.fetchval(
            "SELECT tenant_id FROM api_keys WHERE key_hash = $1", hash_key(key)
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ApiError(503, "unavailable", "the key store is unreachable") from exc
    if tenant is None:
        gw.instruments.auth_attempt(result="failure")
        raise ApiError(401, "invalid_api_key", "the API key is not valid")
    gw.instruments.auth_attempt(result="success")
    trace.get_current_span().set_attribute("soma.tenant.id", str(tenant))
    return str(tenant)


async def authenticate(request: Request) -> str:
    """FastAPI dependency: the tenant of the request's API key."""
    return await authenticate_headers(gateway_of(request), request.headers.get("authorization"))


Tenant = Annotated[str, Depends(authenticate)]


async def evaluate_policy(gw: Gateway, tenant: str, persona_id: str) -> None:
    """Allow a write of ``tenant`` with ``persona_id`` or raise; count the evaluation.

    Denied when the tenant is suspended, the persona is not allowed, or the tenant made more
    than ``rate_limit_per_minute`` writes in the current minute (a Redis counter per minute).
    """
    try:
        row = await gw.pool.fetchrow(
            "SELECT status, allowed_personas, rate_limit_per_minute FROM tenants WHERE id = $1",
            tenant,
        )
        if row is None:
            raise LookupError(f"tenant {tenant} has a key but no tenant row")
        window = int(time.time() // 60)
        key = f"ratelimit:{tenant}:{window}"
        async with gw.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
    except (OSError, LookupError, asyncpg.PostgresError, aioredis.RedisError) as exc:
        gw.instruments.policy_evaluation(result="error")
        _LOG.error("policy evaluation failed", exc_info=True)
        raise ApiError(503, "unavailable", "the policy could not be evaluated") from exc
    if row["status"] != "active":
        gw.instruments.policy_evaluation(result="deny")
        raise ApiError(403, "policy_denied", "the tenant is suspended")
    if persona_id not in row["allowed_personas"]:
        gw.instruments.policy_evaluation(result="deny")
        raise ApiError(403, "policy_denied", f"persona {persona_id!r} is not allowed")
    if int(count) > row["rate_limit_per_minute"]:
        gw.instruments.policy_evaluation(result="deny")
        raise ApiError(429, "rate_limited", "the tenant's writes per minute are used up")
    gw.instruments.policy_evaluation(result="allow")


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


async def session_of(gw: Gateway, tenant: str, session_id: str) -> asyncpg.Record:
    """The session ``session_id`` of ``tenant``; 404 if unknown or another tenant's."""
    if not _UUID.match(session_id):
        raise ApiError(404, "session_not_found", "no such session")
    try:
        row = await gw.pool.fetchrow(
            "SELECT id, persona_id FROM sessions WHERE id = $1 AND tenant_id = $2",
            uuid.UUID(session_id), tenant,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ApiError(503, "unavailable", "the session store is unreachable") from exc
    if row is None:
        raise ApiError(404, "session_not_found", "no such session")
    return row


def create_app(settings: Settings) -> FastAPI:
    """Build the gateway application; connections open in its lifespan."""
    faults = FaultState(GatewayFaults, settings.faults_json)
    ratio = DeterministicRatio()
    faults.on_change(lambda f: ratio.reset(f.gateway_5xx_ratio))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await db.connect(settings.postgres_dsn)
        redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=3)
        await ensure_topics(settings.kafka_bootstrap)
        producer = await new_producer(settings.kafka_bootstrap)
        hub = ReplyHub()
        tail = TopicTail(
            CONVERSATION_REPLIES, hub.deliver, validator=validate_reply,
            guard_group=REPLY_GUARD_GROUP, bootstrap=settings.kafka_bootstrap,
            name="reply fan-out",
        )
        await tail.start()
        app.state.gateway = Gateway(settings, pool, redis, producer, create_instruments(), hub)
        _LOG.info("gateway ready", extra={"port": settings.gateway_port})
        try:
            yield
        finally:
            await tail.stop()
            await producer.stop()
            await redis.aclose()
            await pool.close()

    app = FastAPI(title="SomaAgent gateway", lifespan=lifespan)
    install_error_handlers(app)

    @app.exception_handler(ApiError422)
    async def invalid_body(_: Request, exc: ApiError422) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, details=exc.details), 422)

    app.add_middleware(InjectedFaultMiddleware, ratio=ratio)
    app.add_middleware(DebugTraceMiddleware)
    app.include_router(faults_router(faults))

    async def kafka_ok() -> bool:
        return await kafka_reachable(settings.kafka_bootstrap)

    async def redis_ok() -> bool:
        try:
            return bool(await app.state.gateway.redis.ping())
        except (OSError, aioredis.RedisError):
            return False

    async def postgres_ok() -> bool:
        return await db.postgres_reachable(app.state.gateway.pool)

    add_health_routes(app, {"kafka": kafka_ok, "redis": redis_ok, "postgres": postgres_ok})

    @app.post("/admin/tenants", status_code=201, dependencies=[Depends(require_loopback)])
    async def create_tenant(request: Request) -> dict[str, Any]:
        """Create (or update) a tenant and issue a new API key for it."""
        gw = gateway_of(request)
        body = await read_model(request, TenantCreate)
        api_key = "soma_" + secrets.token_urlsafe(32)
        async with gw.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO tenants (id, status, token_budget, persona_token_budget,
                       allowed_tools, allowed_personas, rate_limit_per_minute)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (id) DO UPDATE SET status = $2, token_budget = $3,
                       persona_token_budget = $4, allowed_tools = $5, allowed_personas = $6,
                       rate_limit_per_minute = $7""",
                body.tenant_id, body.status, body.token_budget, body.persona_token_budget,
                body.allowed_tools, body.allowed_personas, body.rate_limit_per_minute,
            )
            await conn.execute(
                "INSERT INTO api_keys (key_hash, tenant_id) VALUES ($1, $2)",
                hash_key(api_key), body.tenant_id,
            )
        return {"tenant_id": body.tenant_id, "api_key": api_key}

    @app.post("/v1/sessions", status_code=201)
    async def create_session(request: Request, tenant: Tenant) -> dict[str, Any]:
        """Open a session for the caller's tenant with the given persona."""
        gw = gateway_of(request)
        body = await read_model(request, SessionCreate, allow_empty=True)
        await evaluate_policy(gw, tenant, body.persona_id)
        session_id = uuid.uuid4()
        try:
            await gw.pool.execute(
                "INSERT INTO sessions (id, tenant_id, persona_id) VALUES ($1, $2, $3)",
                session_id, tenant, body.persona_id,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise ApiError(503, "unavailable", "the session store is unreachable") from exc
        gw.instruments.session_created()
        return {"session_id": str(session_id), "persona_id": body.persona_id}

    @app.post("/v1/sessions/{session_id}/messages", status_code=202)
    async def post_message(request: Request, session_id: str, tenant: Tenant) -> dict[str, Any]:
        """Accept a message: store it, publish it to ``conversation.events``, answer 202."""
        gw = gateway_of(request)
        body = await read_model(request, MessageCreate)
        limit = gw.settings.slm_max_tokens
        if body.max_reply_tokens is not None and body.max_reply_tokens > limit:
            raise ApiError422([{"loc": ["max_reply_tokens"],
                                "msg": f"Input should be less than or equal to {limit}",
                                "type": "less_than_equal"}])
        session = await session_of(gw, tenant, session_id)
        await evaluate_policy(gw, tenant, session["persona_id"])
        message_id = uuid.uuid4()
        trace_id = current_trace_id()
        try:
            await gw.pool.execute(
                """INSERT INTO messages (id, session_id, tenant_id, role, content, status,
                       trace_id) VALUES ($1, $2, $3, 'user', $4, 'accepted', $5)""",
                message_id, session["id"], tenant, body.text, trace_id,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise ApiError(503, "unavailable", "the message store is unreachable") from exc
        event: dict[str, Any] = {
            "message_id": str(message_id),
            "session_id": session_id.lower(),
            "tenant_id": tenant,
            "persona_id": session["persona_id"],
            "text": body.text,
            "created_at": time.time(),
        }
        if body.max_reply_tokens is not None:
            event["max_reply_tokens"] = body.max_reply_tokens
        try:
            await send_event(gw.producer, CONVERSATION_EVENTS, event, key=session_id.lower())
        except Exception as exc:
            await gw.pool.execute("UPDATE messages SET status = 'failed' WHERE id = $1", message_id)
            raise ApiError(503, "unavailable", "the event bus is unreachable") from exc
        return {"message_id": str(message_id), "trace_id": trace_id}

    @app.get("/v1/sessions/{session_id}/messages")
    async def list_messages(request: Request, session_id: str, tenant: Tenant) -> dict[str, Any]:
        """The session's messages and replies, oldest first."""
        gw = gateway_of(request)
        session = await session_of(gw, tenant, session_id)
        rows = await gw.pool.fetch(
            """SELECT id, role, content, status, intent, reply_to, created_at FROM messages
               WHERE session_id = $1 ORDER BY created_at, role DESC""",
            session["id"],
        )
        return {
            "session_id": session_id.lower(),
            "messages": [
                {
                    "id": str(r["id"]), "role": r["role"], "content": r["content"],
                    "status": r["status"], "intent": r["intent"],
                    "reply_to": str(r["reply_to"]) if r["reply_to"] else None,
                    "created_at": r["created_at"].isoformat(),
                }
                for r in rows
            ],
        }

    @app.websocket("/v1/sessions/{session_id}/stream")
    async def stream(websocket: WebSocket, session_id: str) -> None:
        """Stream the session's replies as JSON text frames until the client leaves."""
        gw: Gateway = websocket.app.state.gateway
        try:
            tenant = await authenticate_headers(gw, websocket.headers.get("authorization"))
            await session_of(gw, tenant, session_id)
        except ApiError as exc:
            await websocket.send_denial_response(
                JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)
            )
            return
        await websocket.accept()
        queue = gw.hub.subscribe(session_id.lower())
        with gw.instruments.websocket_connection():
            receiver = asyncio.create_task(_drain_client(websocket))
            try:
                while not receiver.done():
                    getter = asyncio.create_task(queue.get())
                    await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        break
                    reply = getter.result()
                    reply.pop("trace_context", None)
                    await websocket.send_json(reply)
            except (WebSocketDisconnect, RuntimeError):
                pass
            finally:
                receiver.cancel()
                gw.hub.unsubscribe(session_id.lower(), queue)

    return app


async def _drain_client(websocket: WebSocket) -> None:
    """Read (and ignore) client frames until the client disconnects."""
    try:
        while True:
            await websocket.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        return
