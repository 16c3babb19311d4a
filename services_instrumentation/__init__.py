"""The spec's service-emitted instruments, one module per service.

Create them once per process, after :func:`otel.configure` (they use the global MeterProvider
unless one is passed), and record through their methods, which fix the label keys::

    from services_instrumentation import gateway

    instruments = gateway.create_instruments()
    instruments.auth_attempt(result="success")

The span-derived series (request counts, error counts, latencies) are not here: the collector
derives them from the spans of :mod:`otel` (see ``docs/metrics.md``).
"""

from services_instrumentation.conversation_worker import ConversationWorkerInstruments
from services_instrumentation.gateway import GatewayInstruments
from services_instrumentation.tool_executor import ToolExecutorInstruments

__all__ = ["ConversationWorkerInstruments", "GatewayInstruments", "ToolExecutorInstruments"]
