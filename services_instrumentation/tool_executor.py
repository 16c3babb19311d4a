"""Tool executor instruments (spec 2.3, minus the span-derived ``tool_execution_*`` series).

=============================  =============  =================  ===================
series (as Prometheus shows)   instrument     labels             unit
=============================  =============  =================  ===================
policy_blocked_total           Counter        tool_name, tenant  ``{execution}``
sandbox_active_executions      UpDownCounter  -                  ``{execution}``
resource_usage_cpu_seconds     Counter        tool_name          ``s`` (Prometheus:
_total                                                           ``..._seconds_total``)
resource_usage_memory_bytes    Histogram      tool_name          ``By``, spec buckets
=============================  =============  =================  ===================

The CPU counter is created as ``resource_usage_cpu_seconds`` (the spec's name); the collector's
Prometheus exporter adds ``_total`` to monotonic counters, so Prometheus shows
``resource_usage_cpu_seconds_total``. ``sandbox_active_executions`` is exported at 0 as soon as
the instruments are created.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from opentelemetry import metrics

from otel._catalog import RESOURCE_USAGE_MEMORY_BUCKETS

__all__ = ["METER_NAME", "ToolExecutorInstruments", "create_instruments"]

METER_NAME: Final = "services_instrumentation.tool_executor"


class ToolExecutorInstruments:
    """The tool executor's instruments on one MeterProvider."""

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(METER_NAME)
        self.policy_blocked = meter.create_counter(
            "policy_blocked_total", unit="{execution}", description="Policy-blocked tool executions"
        )
        self.sandbox_active = meter.create_up_down_counter(
            "sandbox_active_executions",
            unit="{execution}",
            description="Currently executing tools in sandbox",
        )
        # The spec's gauge reads 0 from start-up: export the series (no attributes, as
        # sandbox_execution() records it) before the first execution.
        self.sandbox_active.add(0)
        self.cpu_seconds = meter.create_counter(
            "resource_usage_cpu_seconds", unit="s", description="CPU seconds consumed by tools"
        )
        self.memory_bytes = meter.create_histogram(
            "resource_usage_memory_bytes",
            unit="By",
            description="Memory usage by tools",
            explicit_bucket_boundaries_advisory=list(RESOURCE_USAGE_MEMORY_BUCKETS),
        )

    def tool_blocked(self, *, tool_name: str, tenant: str) -> None:
        """Count one tool execution the policy blocked."""
        self.policy_blocked.add(1, {"tool_name": tool_name, "tenant": tenant})

    @contextmanager
    def sandbox_execution(self) -> Iterator[None]:
        """Count a sandbox execution as active while the block runs."""
        self.sandbox_active.add(1)
        try:
            yield
        finally:
            self.sandbox_active.add(-1)

    def resource_usage(self, *, tool_name: str, cpu_seconds: float, memory_bytes: int) -> None:
        """Record one execution's CPU time (seconds) and peak memory (bytes)."""
        if not math.isfinite(cpu_seconds) or cpu_seconds < 0:
            raise ValueError(f"cpu_seconds must be a finite number >= 0, got {cpu_seconds}")
        if memory_bytes < 0:
            raise ValueError(f"memory_bytes must be >= 0, got {memory_bytes}")
        attributes = {"tool_name": tool_name}
        self.cpu_seconds.add(cpu_seconds, attributes)
        self.memory_bytes.record(memory_bytes, attributes)


def create_instruments(
    meter_provider: metrics.MeterProvider | None = None,
) -> ToolExecutorInstruments:
    """The tool executor's instruments (global MeterProvider unless one is given)."""
    return ToolExecutorInstruments(meter_provider)
