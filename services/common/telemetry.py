"""Telemetry setup shared by the three services, and the always-keep (debug) trace flag.

``setup(service_name)`` calls :func:`otel.configure` (under ``opentelemetry-instrument`` it adds
the library's scrubbing, JSON logs on stdout and OTLP log scrubbing to the distro's providers)
with one extra span processor, :class:`KeepFlagFromBaggage`.

Always-kept traces
------------------
A request to the gateway with the header ``X-Soma-Debug-Trace: 1`` puts the W3C baggage entry
``soma.sampling.keep=true`` into its context (:func:`keep_context`) and marks the server span.
The baggage travels with the trace context (HTTP, Kafka headers and event body), and on every
service :class:`KeepFlagFromBaggage` copies it onto each span started under it as the attribute
``soma.sampling.keep=true``, so the collector's tail sampler keeps the whole trace, whichever
span it sees first. Anyone who can reach the gateway can set the header (or the baggage); it
costs only Jaeger storage.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

import otel

DEBUG_TRACE_HEADER: Final = "x-soma-debug-trace"
KEEP_BAGGAGE_KEY: Final = otel.SOMA_SAMPLING_KEEP


class KeepFlagFromBaggage(SpanProcessor):
    """Set ``soma.sampling.keep=true`` on every span whose parent context carries that baggage."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Copy the baggage flag onto ``span`` as an attribute."""
        if baggage.get_baggage(KEEP_BAGGAGE_KEY, parent_context) == "true":
            span.set_attribute(otel.SOMA_SAMPLING_KEEP, True)

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing to do when a span ends."""

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        return True


def keep_context(parent: Context | None = None) -> Context:
    """Return ``parent`` (default: current) with the always-keep baggage entry set."""
    return baggage.set_baggage(KEEP_BAGGAGE_KEY, "true", context=parent)


def keep_requested(header_value: str | None) -> bool:
    """Tell whether a ``X-Soma-Debug-Trace`` header value asks for an always-kept trace."""
    return header_value is not None and header_value.strip().lower() in {"1", "true", "yes"}


def current_trace_id() -> str:
    """The current span's trace id as 32 lowercase hex digits ("" outside a valid span)."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def setup(service_name: str) -> otel.Telemetry:
    """Configure telemetry for ``service_name`` (see the module docstring); call it first."""
    return otel.configure(
        service_name=service_name, additional_span_processors=[KeepFlagFromBaggage()]
    )


__all__ = [
    "DEBUG_TRACE_HEADER",
    "KEEP_BAGGAGE_KEY",
    "KeepFlagFromBaggage",
    "current_trace_id",
    "keep_context",
    "keep_requested",
    "setup",
]
