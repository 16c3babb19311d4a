"""The tool executor's handling of one ``tool.requests`` record.

Request event: ``{"correlation_id", "tenant_id", "session_id", "tool_name", "arguments": {...},
"limits": {"cpu_seconds", "memory_bytes", "wall_seconds"} (optional, may only lower the
defaults)}``. Result event on ``tool.results``: ``{"correlation_id", "tool_name", "status":
"ok" | "error" | "blocked", "output", "error_type", "error_message", "cpu_seconds",
"memory_bytes"}``.

Each valid request runs in an ``execute_tool {tool_name}`` span (``gen_ai.operation.name=
execute_tool``, ``gen_ai.tool.name``), child of the ``process tool.requests`` span:

* the tenant's ``allowed_tools`` lacks the tool -> ``policy_blocked_total{tool_name,tenant}``,
  ``error.type=policy_blocked``, result ``blocked``; no sandbox;
* otherwise one sandbox run (:mod:`.sandbox`) under ``sandbox_active_executions``, then
  ``resource_usage_cpu_seconds{tool_name}`` and ``resource_usage_memory_bytes{tool_name}`` from
  the child's own rusage; ``error.type`` = ``tool_error`` | ``tool_timeout`` |
  ``limit_exceeded`` | ``tool_crashed`` when it failed.

``tool_crashed`` is the retryable kind: the handler raises :class:`otel.dlq.RetryableError`, so
the record is retried (:data:`services.common.kafka.RETRY_POLICY`, each attempt its own
``execute_tool`` span); on the last attempt the executor first publishes an ``error`` result
(so the worker stops waiting), then the record goes to ``tool.requests.dlq``. The other
failures are final: their result is published and the record committed.

Malformed requests (not JSON, missing fields, unknown tool) go to ``tool.requests.dlq`` with
``invalid_event``/``undecodable_event``; an unknown tenant with ``unknown_tenant``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

import otel
from otel.dlq import InvalidEventError, PermanentError, RetryableError
from otel.kafka import send_event
from services.common.kafka import RETRY_POLICY, TOOL_RESULTS
from services.faults import DeterministicRatio, ExecutorFaults
from services.tool_executor.runner import TOOLS
from services.tool_executor.sandbox import Limits, Outcome, run_sandboxed
from services_instrumentation.tool_executor import ToolExecutorInstruments

_LOG = logging.getLogger("services.tool_executor")

DEFAULT_LIMITS: Final = Limits()


def validate_request(event: dict[str, Any]) -> None:
    """Reject a ``tool.requests`` event that lacks a field, has a wrong type or names no tool."""
    for name in ("correlation_id", "tenant_id", "tool_name"):
        if not isinstance(event.get(name), str) or not event[name]:
            raise InvalidEventError(f"field {name!r} must be a non-empty string")
    if event["tool_name"] not in TOOLS:
        raise InvalidEventError(f"unknown tool {event['tool_name'][:64]!r}")
    if not isinstance(event.get("arguments", {}), dict):
        raise InvalidEventError("field 'arguments' must be an object")
    limits = event.get("limits", {})
    if not isinstance(limits, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v > 0
        for v in limits.values()
    ):
        raise InvalidEventError("field 'limits' must map names to positive numbers")


def limits_of(event: dict[str, Any]) -> Limits:
    """The run's limits: the request's values, capped at :data:`DEFAULT_LIMITS`."""
    asked = event.get("limits") or {}
    return Limits(
        cpu_seconds=max(1, min(int(asked.get("cpu_seconds", DEFAULT_LIMITS.cpu_seconds)),
                               DEFAULT_LIMITS.cpu_seconds)),
        memory_bytes=min(int(asked.get("memory_bytes", DEFAULT_LIMITS.memory_bytes)),
                         DEFAULT_LIMITS.memory_bytes),
        wall_seconds=min(float(asked.get("wall_seconds", DEFAULT_LIMITS.wall_seconds)),
                         DEFAULT_LIMITS.wall_seconds),
    )


@dataclass
class Executor:
    """Everything one tool request handler needs."""

    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    instruments: ToolExecutorInstruments
    faults: ExecutorFaults
    failure_ratio: DeterministicRatio
    attempts: dict[tuple[int, int], int] = field(default_factory=lambda: defaultdict(int))

    async def handle(self, event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        """Handle one valid ``tool.requests`` event (see the module docstring)."""
        position = (record.partition, record.offset)
        self.attempts[position] += 1
        last_attempt = self.attempts[position] >= RETRY_POLICY.max_attempts
        try:
            await self._execute(event, last_attempt=last_attempt)
        except RetryableError:
            if last_attempt:
                self.attempts.pop(position, None)
            raise
        self.attempts.pop(position, None)

    async def _execute(self, event: dict[str, Any], *, last_attempt: bool) -> None:
        tool, tenant = event["tool_name"], event["tenant_id"]
        with otel.execute_tool(
            tool, attributes={"soma.tenant.id": tenant,
                              "soma.correlation.id": event["correlation_id"]},
        ) as span:
            allowed = await self.pool.fetchval(
                "SELECT allowed_tools FROM tenants WHERE id = $1", tenant
            )
            if allowed is None:
                otel.record_failure(span, "unknown_tenant")
                raise PermanentError(f"unknown tenant {tenant!r}", error_type="unknown_tenant")
            if tool not in allowed:
                self.instruments.tool_blocked(tool_name=tool, tenant=tenant)
                otel.record_failure(span, "policy_blocked")
                await self._publish(event, "blocked", error_type="policy_blocked",
                                    message=f"tool {tool!r} is not allowed for this tenant")
                return
            arguments = event.get("arguments") or {}
            marker = self.faults.tool_failure_marker
            fail = self.failure_ratio.next_fails() or bool(
                marker and any(marker in str(v) for v in arguments.values())
            )
            limits = limits_of(event)
            with self.instruments.sandbox_execution():
                outcome = await asyncio.to_thread(run_sandboxed, tool, arguments, limits,
                                                  fail=fail)
            self.instruments.resource_usage(tool_name=tool, cpu_seconds=outcome.cpu_seconds,
                                            memory_bytes=outcome.memory_bytes)
            span.set_attributes({
                "soma.sandbox.exit_code": outcome.exit_code,
                "soma.sandbox.cpu_seconds": outcome.cpu_seconds,
                "soma.sandbox.memory_bytes": outcome.memory_bytes,
                "soma.sandbox.wall_seconds": outcome.wall_seconds,
                "soma.sandbox.fault_injected": fail,
            })
            if outcome.kind == "ok":
                await self._publish(event, "ok", outcome=outcome)
                return
            otel.record_failure(span, outcome.kind)
            if outcome.kind == "tool_crashed":
                if last_attempt:
                    await self._publish(event, "error", outcome=outcome,
                                        error_type=outcome.kind, message=outcome.message)
                raise RetryableError(f"sandbox crashed: {outcome.message}",
                                     error_type="tool_crashed")
            await self._publish(event, "error", outcome=outcome, error_type=outcome.kind,
                                message=outcome.message)

    async def _publish(
        self, event: dict[str, Any], status: str, *, outcome: Outcome | None = None,
        error_type: str | None = None, message: str = "",
    ) -> None:
        await send_event(
            self.producer, TOOL_RESULTS,
            {"correlation_id": event["correlation_id"], "tool_name": event["tool_name"],
             "status": status, "output": outcome.output if outcome else None,
             "error_type": error_type, "error_message": message or None,
             "cpu_seconds": outcome.cpu_seconds if outcome else 0.0,
             "memory_bytes": outcome.memory_bytes if outcome else 0},
            key=str(event.get("session_id") or event["correlation_id"]),
        )
