"""The conversation worker's handling of one ``conversation.events`` record.

Inside the ``process conversation.events`` span (from :class:`otel.dlq.EventConsumer`), each
valid event runs in a ``conversation.process`` span (INTERNAL):

1. classify the intent (:mod:`.intent`) -> ``intent_classification_total{intent}``;
2. check the budgets (:mod:`.budget`); over budget -> ``budget_limit_reached_total``, the reply
   "token budget exhausted", user message status ``over_budget``, and the span gets status
   ERROR with ``error.type=budget_exhausted``: it *does* count in
   ``conversation_errors_total{error_type="budget_exhausted"}`` (the user got no answer; the
   record itself is handled and committed, not retried or dead-lettered);
3. for ``calculate``/``stats``: publish to ``tool.requests`` and wait for the result with the
   same ``correlation_id`` on ``tool.results`` (``TOOL_RESULT_TIMEOUT_SECONDS``). A tool that
   failed or was blocked is reported in the reply (the span stays OK; the failure is counted by
   the executor's ``execute_tool`` span). No result in time -> the reply says so and the span
   gets ``error.type=tool_result_timeout``;
4. call the SLM (:mod:`.slm`; at most the event's optional ``max_reply_tokens``, never more
   than ``SLM_MAX_TOKENS``) -> ``slm_tokens_total{model,type}``, then charge the tokens ->
   ``budget_tokens_consumed_total{tenant,persona_id}``;
5. store the exchange in PostgreSQL (user message status, assistant row; idempotent on
   redelivery) and publish the reply to ``conversation.replies``.

Invalid events (missing or mistyped fields) go to ``conversation.events.dlq`` with
``error.type=invalid_event``; an unknown session with ``unknown_session``; SLM failures are
retried (:data:`services.common.kafka.RETRY_POLICY`) and then dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from opentelemetry.trace import Span

import otel
from otel.dlq import InvalidEventError, PermanentError, ProcessingError
from otel.kafka import send_event
from services.common.kafka import CONVERSATION_REPLIES, TOOL_REQUESTS
from services.common.telemetry import current_trace_id
from services.conversation_worker.budget import Budgets
from services.conversation_worker.intent import Intent, classify
from services.conversation_worker.slm import SlmClient
from services.faults import WorkerFaults
from services_instrumentation.conversation_worker import ConversationWorkerInstruments

_LOG = logging.getLogger("services.conversation_worker")

REPLY_NAMESPACE: Final = uuid.UUID("0b6c4a52-7d07-4f0e-9e7e-5e2b3c1d9a11")
_REQUIRED_STR: Final = ("message_id", "session_id", "tenant_id", "persona_id", "text")


class PoisonMessageError(ProcessingError):
    """A message carrying the ``poison_marker`` fault: the handler fails on it every time."""

    default_error_type = "poison_message"


def validate_event(event: dict[str, Any]) -> None:
    """Reject a ``conversation.events`` event that lacks a field or has a wrong type."""
    for name in _REQUIRED_STR:
        value = event.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidEventError(f"field {name!r} must be a non-empty string")
    for name in ("message_id", "session_id"):
        try:
            uuid.UUID(event[name])
        except ValueError as exc:
            raise InvalidEventError(f"field {name!r} must be a UUID") from exc
    if len(event["text"]) > 4000:
        raise InvalidEventError("field 'text' is longer than 4000 characters")
    cap = event.get("max_reply_tokens")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise InvalidEventError("field 'max_reply_tokens' must be a positive integer")


TOOL_STATUSES: Final = frozenset({"ok", "error", "blocked"})


def validate_tool_result(event: dict[str, Any]) -> None:
    """Reject a ``tool.results`` event the worker cannot match or read.

    ``correlation_id`` and ``tool_name`` must be non-empty strings and ``status`` one of
    ``ok``, ``error``, ``blocked``. The worker's DLQ guard dead-letters what this rejects; its
    tail resolves the rest (see :class:`services.common.kafka.TopicTail`).
    """
    for name in ("correlation_id", "tool_name"):
        value = event.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidEventError(f"field {name!r} must be a non-empty string")
    if event.get("status") not in TOOL_STATUSES:
        raise InvalidEventError(f"field 'status' must be one of {sorted(TOOL_STATUSES)}")


@dataclass
class PendingTools:
    """Tool requests awaiting their result, by correlation id."""

    futures: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    def expect(self, correlation_id: str) -> asyncio.Future[dict[str, Any]]:
        """Return a future that :meth:`resolve` completes with the result."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.futures[correlation_id] = future
        return future

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for ``correlation_id``."""
        self.futures.pop(correlation_id, None)

    async def resolve(self, event: dict[str, Any]) -> None:
        """Complete the future of a valid ``tool.results`` event (a result this instance does
        not wait for is another instance's, or came too late: ignored)."""
        future = self.futures.get(event["correlation_id"])
        if future is not None and not future.done():
            future.set_result(event)


@dataclass
class Worker:
    """Everything one conversation handler needs."""

    pool: asyncpg.Pool
    budgets: Budgets
    slm: SlmClient
    producer: AIOKafkaProducer
    instruments: ConversationWorkerInstruments
    pending: PendingTools
    faults: WorkerFaults
    unstuck: asyncio.Event
    tool_result_timeout: float

    async def handle(self, event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        """Handle one valid ``conversation.events`` event (see the module docstring)."""
        await self.unstuck.wait()  # consumer_stuck fault: no record is taken meanwhile
        with otel.conversation_process(
            conversation_id=event["session_id"],
            attributes={"soma.tenant.id": event["tenant_id"],
                        "soma.persona.id": event["persona_id"],
                        "soma.message.id": event["message_id"]},
        ) as span:
            try:
                await self._converse(event, span)
            except ProcessingError as exc:  # keep the short error.type, not the class name
                otel.record_failure(span, exc.error_type, exc)
                raise

    async def _converse(self, event: dict[str, Any], span: Span) -> None:
        """The body of the ``conversation.process`` span."""
        marker = self.faults.poison_marker
        if marker and marker in event["text"]:
            raise PoisonMessageError("message carries the poison_marker fault")
        intent = classify(event["text"])
        span.set_attribute("soma.intent", intent.name)
        self.instruments.intent_classified(intent=intent.name)
        tenant, persona = event["tenant_id"], event["persona_id"]
        limits = await self.pool.fetchrow(
            "SELECT token_budget, persona_token_budget FROM tenants WHERE id = $1", tenant
        )
        if limits is None:
            raise PermanentError(f"unknown tenant {tenant!r}", error_type="unknown_tenant")
        tenant_limit, persona_limit = limits["token_budget"], limits["persona_token_budget"]
        if self.faults.budget_exhausted:
            tenant_limit = persona_limit = 0
        state = await self.budgets.check(tenant, persona, tenant_limit, persona_limit)
        if not state.allowed:
            self.instruments.budget_limit_hit(tenant=tenant, persona_id=persona)
            otel.record_failure(span, "budget_exhausted")
            text = (f"Your token budget is exhausted for today (tenant used "
                    f"{state.tenant_used} of {tenant_limit}, persona {persona!r} used "
                    f"{state.persona_used} of {persona_limit}). Try again tomorrow.")
            await self._finish(event, intent, text, "over_budget")
            return
        prompt, tool_note = event["text"], ""
        if intent.tool_name is not None:
            result = await self._run_tool(event, intent)
            if result is None:
                otel.record_failure(span, "tool_result_timeout")
                tool_note = f"The {intent.tool_name} tool did not answer in time."
            elif result.get("status") == "ok":
                tool_note = f"{intent.tool_name}: {result.get('output')}"
                prompt = (f"The user asked: {event['text']}\nThe {intent.tool_name} tool "
                          f"returned: {result.get('output')}\nState the result.")
            elif result.get("status") == "blocked":
                tool_note = f"The {intent.tool_name} tool is not allowed for your tenant."
            else:
                tool_note = (f"The {intent.tool_name} tool failed "
                             f"({result.get('error_type')}): {result.get('error_message')}")
        chat = await self.slm.chat(prompt, delay=self.faults.slm_delay_seconds,
                                   max_tokens=event.get("max_reply_tokens"))
        self.instruments.slm_tokens_used(
            model=self.slm.model, input_tokens=chat.input_tokens,
            output_tokens=chat.output_tokens,
        )
        tokens = chat.input_tokens + chat.output_tokens
        await self.budgets.consume(tenant, persona, tokens)
        self.instruments.budget_consumed(tenant=tenant, persona_id=persona, tokens=tokens)
        text = "\n".join(t for t in (tool_note, chat.text) if t)
        await self._finish(event, intent, text, "answered")

    async def _run_tool(self, event: dict[str, Any], intent: Intent) -> dict[str, Any] | None:
        """Request the tool over Kafka and wait for its result (None on timeout)."""
        correlation_id = str(uuid.uuid4())
        future = self.pending.expect(correlation_id)
        try:
            await send_event(
                self.producer, TOOL_REQUESTS,
                {"correlation_id": correlation_id, "tenant_id": event["tenant_id"],
                 "session_id": event["session_id"], "message_id": event["message_id"],
                 "tool_name": intent.tool_name, "arguments": intent.arguments,
                 "requested_at": time.time()},
                key=event["session_id"],
            )
            return await asyncio.wait_for(future, self.tool_result_timeout)
        except TimeoutError:
            _LOG.warning("tool result timed out", extra={"correlation_id": correlation_id,
                                                          "tool_name": intent.tool_name})
            return None
        finally:
            self.pending.forget(correlation_id)

    async def _finish(self, event: dict[str, Any], intent: Intent, text: str, status: str) -> None:
        """Store the exchange and publish the reply."""
        message_id = uuid.UUID(event["message_id"])
        reply_id = uuid.uuid5(REPLY_NAMESPACE, str(message_id))
        session_id = uuid.UUID(event["session_id"])
        trace_id = current_trace_id()
        async with self.pool.acquire() as conn, conn.transaction():
            known = await conn.fetchval(
                "SELECT 1 FROM sessions WHERE id = $1 AND tenant_id = $2",
                session_id, event["tenant_id"],
            )
            if not known:
                raise PermanentError("the event's session does not exist for its tenant",
                                     error_type="unknown_session")
            await conn.execute(
                """INSERT INTO messages (id, session_id, tenant_id, role, content, status,
                       intent, trace_id) VALUES ($1, $2, $3, 'user', $4, $5, $6, $7)
                   ON CONFLICT (id) DO UPDATE SET status = $5, intent = $6""",
                message_id, session_id, event["tenant_id"], event["text"], status,
                intent.name, trace_id,
            )
            await conn.execute(
                """INSERT INTO messages (id, session_id, tenant_id, role, content, status,
                       intent, trace_id, reply_to)
                   VALUES ($1, $2, $3, 'assistant', $4, $5, $6, $7, $8)
                   ON CONFLICT (id) DO NOTHING""",
                reply_id, session_id, event["tenant_id"], text, status, intent.name, trace_id,
                message_id,
            )
        await send_event(
            self.producer, CONVERSATION_REPLIES,
            {"session_id": event["session_id"], "message_id": str(reply_id),
             "reply_to": event["message_id"], "status": status, "intent": intent.name,
             "text": text, "trace_id": trace_id},
            key=event["session_id"],
        )
