"""The library's own instruments (not in the spec, listed in ``docs/metrics.md`` as ``library``).

* ``dlq_events_total{source_topic,error_type}`` (scope ``otel.dlq``): records written to
  ``<source_topic>.dlq``, counted on the broker's ack.
* ``soma_trace_context_invalid_total{source,reason}`` (scope ``otel.kafka``): consumed records
  whose trace context was missing or unusable, so that their handler started a new trace;
  ``source`` is ``header``, ``body`` or ``none``.
* ``soma_telemetry_heartbeat_timestamp_seconds`` (scope ``otel``): an observable gauge whose
  value is the Unix time of each metric collection, registered by ``otel.configure()`` (and so
  by the distro in every service run under ``opentelemetry-instrument``). The collector's
  exporter keeps serving the last value for a while after a process stops; ``time()`` minus
  that value is how long the service has been silent, which is how the
  ``ServiceTelemetryMissing`` alert tells a silent process from an idle one (whose other series
  may legitimately never appear), for any job, with no job list.
* ``soma_scrubbed_values_total{signal,rule}`` (scope ``otel``): values the scrubber redacted;
  ``signal`` is ``logs`` or ``traces``, ``rule`` the name of the scrubbing rule that matched (a
  fixed, small set), never the key itself, so the label stays low-cardinality.

Names, units, descriptions and scopes are the ones ``otel.kafka`` and ``otel.dlq`` create, so that
creating them here too yields the same instruments. Use :func:`library_instruments`, which binds
to the global MeterProvider that is current when it is called.
"""

from __future__ import annotations

import threading
import time
from typing import Final, Literal

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

__all__ = [
    "DLQ_METER_NAME",
    "KAFKA_METER_NAME",
    "METER_NAME",
    "LibraryInstruments",
    "library_instruments",
]

METER_NAME: Final = "otel"
DLQ_METER_NAME: Final = "otel.dlq"
KAFKA_METER_NAME: Final = "otel.kafka"

TraceContextSource = Literal["header", "body", "none"]


class LibraryInstruments:
    """The library's counters, created on one MeterProvider."""

    def __init__(self, meter_provider: metrics.MeterProvider) -> None:
        meter = meter_provider.get_meter(METER_NAME)
        self.dlq_events_counter = meter_provider.get_meter(DLQ_METER_NAME).create_counter(
            "dlq_events_total",
            unit="{event}",
            description="Records written to a dead-letter topic (counted on the broker's ack).",
        )
        self.trace_context_invalid_events = meter_provider.get_meter(
            KAFKA_METER_NAME
        ).create_counter(
            "soma_trace_context_invalid_total",
            unit="{record}",
            description="Consumed records whose trace context was missing or malformed.",
        )
        self.heartbeat = meter.create_observable_gauge(
            "soma_telemetry_heartbeat_timestamp_seconds",
            callbacks=[_beat],
            unit="s",
            description="Unix time of the latest metric collection of a process set up by "
            "otel.configure()",
        )
        self.scrubbed_values_counter = meter.create_counter(
            "soma_scrubbed_values_total",
            unit="{value}",
            description="Values redacted before they left the process",
        )

    def dlq_event(self, *, source_topic: str, error_type: str) -> None:
        """Count one event written to ``<source_topic>.dlq``."""
        self.dlq_events_counter.add(1, {"source_topic": source_topic, "error_type": error_type})

    def trace_context_invalid(self, *, source: TraceContextSource, reason: str) -> None:
        """Count one consumed record whose trace context in ``source`` was unusable."""
        self.trace_context_invalid_events.add(1, {"source": source, "reason": reason})

    def scrubbed(self, *, signal: Literal["logs", "traces"], rule: str, count: int = 1) -> None:
        """Count ``count`` values redacted from ``signal`` by ``rule``."""
        self.scrubbed_values_counter.add(count, {"signal": signal, "rule": rule})


def _beat(options: CallbackOptions) -> list[Observation]:
    return [Observation(time.time())]


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
