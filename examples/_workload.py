"""The work both examples do: one conversation with an SLM call and a tool call."""

from __future__ import annotations

import logging

import otel
from services_instrumentation import conversation_worker, tool_executor

LOG = logging.getLogger("examples.workload")


def run() -> str:
    """Emit one trace (conversation.process > chat, execute_tool), metrics and logs.

    Returns the trace id (32 lowercase hex digits).
    """
    worker = conversation_worker.create_instruments()
    executor = tool_executor.create_instruments()
    with otel.conversation_process(conversation_id="example-1") as root:
        LOG.info("conversation started", extra={"tenant": "acme", "password": "never-shown"})
        worker.intent_classified(intent="question")
        with otel.slm_chat("example-model") as chat:
            otel.record_chat_response(
                chat, response_model="example-model", input_tokens=12, output_tokens=30
            )
        worker.slm_tokens_used(model="example-model", input_tokens=12, output_tokens=30)
        worker.budget_consumed(tenant="acme", persona_id="helper", tokens=42)
        with otel.execute_tool("echo") as tool, executor.sandbox_execution():
            tool.set_attribute("http.request.header.authorization", "Bearer example-secret")
            executor.resource_usage(tool_name="echo", cpu_seconds=0.01, memory_bytes=3_000_000)
        LOG.info("conversation done")
        return f"{root.get_span_context().trace_id:032x}"
