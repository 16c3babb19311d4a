"""The library's own instruments (not in the spec, listed in ``docs/metrics.md`` as ``library``).

* ``dlq_events_total{source_topic,error_type}``: events written to ``<source_topic>.dlq``
  (recorded by ``otel.dlq``).
* ``trace_context_invalid_total{topic,reason}``: consumed events whose trace context was missing
  or unusable, so that their handler started a new trace (recorded by ``otel.kafka``);
  ``reason`` is one of :data:`TRACE_CONTEXT_INVALID_REASONS`.
* ``scrubbed_values_total{signal,rule}``: values the scrubber redacted; ``signal`` is ``logs``
  or ``traces``, ``rule`` the name of the scrubbing rule that matched (a fixed, small set), never
  the key itself, so the label stays low-cardinality.

Use :func:`library_instruments`, which binds to the global MeterProvider that is current when it
is called (instruments created from the API's proxy provider before ``configure()`` also work).
"""

from __future__ import annotations

import threading
from typing import Final, Literal

from opentelemetry import metrics

__all__ = [
    "METER_NAME",
    "TRACE_CONTEXT_INVALID_REASONS",
    "LibraryInstruments",
    "library_instruments",
]

METER_NAME: Final = "otel"

TraceContextInvalidReason = Literal["missing", "malformed", "wrong_type", "oversized"]
TRACE_CONTEXT_INVALID_REASONS: tuple[TraceContextInvalidReason, ...] = (
    "missing",
    "malformed",
    "wrong_type",
    "oversized",
)


class LibraryInstruments:
    """The library's counters, created on one MeterProvider."""

    def __init__(self, meter_provider: metrics.MeterProvider) -> None:
        meter = meter_provider.get_meter(METER_NAME)
        self.dlq_events_counter = meter.create_counter(
            "dlq_events_total",
            unit="{event}",
            description="Events written to a dead letter topic",
        )
        self.trace_context_invalid_events = meter.create_counter(
            "trace_context_invalid_total",
            unit="{event}",
            description="Consumed events whose trace context was missing or unusable",
        )
        self.scrubbed_values_counter = meter.create_counter(
            "scrubbed_values_total",
            unit="{value}",
            description="Values redacted before they left the process",
        )

    def dlq_event(self, *, source_topic: str, error_type: str) -> None:
        """Count one event written to ``<source_topic>.dlq``."""
        self.dlq_events_counter.add(1, {"source_topic": source_topic, "error_type": error_type})

    def trace_context_invalid(self, *, topic: str, reason: TraceContextInvalidReason) -> None:
        """Count one consumed event whose handler had to start a new trace."""
        self.trace_context_invalid_events.add(1, {"topic": topic, "reason": reason})

    def scrubbed(self, *, signal: Literal["logs", "traces"], rule: str, count: int = 1) -> None:
        """Count ``count`` values redacted from ``signal`` by ``rule``."""
        self.scrubbed_values_counter.add(count, {"signal": signal, "rule": rule})


_lock = threading.Lock()
_cached: tuple[metrics.MeterProvider, LibraryInstruments] | None = None


def library_instruments() -> LibraryInstruments:
    """The library's instruments on the current global MeterProvider (created once per provider)."""
    global _cached
    provider = metrics.get_meter_provider()
    with _lock:
        if _cached is None or _cached[0] is not provider:
            _cached = (provider, LibraryInstruments(provider))
        return _cached[1]
