"""The metric catalog's constants: bucket boundaries, the span- and collector-derived series.

``docs/metrics.md`` is the human catalog of every series; ``tests/unit/test_metrics_catalog.py``
keeps it equal to this module (span-derived and collector rows) and to the instruments that
``services_instrumentation`` and the library create (all other rows). The collector-config
test imports :data:`SPAN_DERIVED_SERIES` so that the spanmetrics connector uses the same names,
dimensions and buckets; the catalog test checks :data:`COLLECTOR_DERIVED_SERIES` against the
collector config's rename statements.

Bucket boundaries are the spec's, in seconds or bytes; the SDK's default boundaries are meant for
milliseconds and would turn a 0.3 s p95 into 4.75 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "COLLECTOR_DERIVED_SERIES",
    "CONVERSATION_PROCESSING_BUCKETS",
    "HTTP_REQUEST_DURATION_BUCKETS",
    "REDACTION_SERIES",
    "RESOURCE_USAGE_MEMORY_BUCKETS",
    "SLM_LATENCY_BUCKETS",
    "SPAN_DERIVED_SERIES",
    "TOOL_EXECUTION_DURATION_BUCKETS",
    "SeriesSpec",
]

HTTP_REQUEST_DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0)
CONVERSATION_PROCESSING_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SLM_LATENCY_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
TOOL_EXECUTION_DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)
RESOURCE_USAGE_MEMORY_BUCKETS: tuple[float, ...] = (1e6, 10e6, 50e6, 100e6, 500e6, 1e9)

PrometheusType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class SeriesSpec:
    """One series as Prometheus shows it, with where it comes from.

    ``instrument`` is the OTLP instrument name (``None`` for span-derived series; for a
    ``collector`` series, the receiver's metric the collector renames); ``source`` is
    ``span-derived``, ``collector`` (a collector receiver, not the services, produces it),
    ``collector-redaction`` (the collector's count of what it redacted) or the
    service (``gateway``, ``conversation-worker``, ``tool-executor``) or ``library`` that emits
    it; ``spans`` describes the span filter of a span-derived series.
    """

    name: str
    type: PrometheusType
    labels: tuple[str, ...]
    unit: str
    buckets: tuple[float, ...]
    source: str
    instrument: str | None = None
    spans: str = ""


_SPAN = "span-derived"

SPAN_DERIVED_SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec(
        "http_requests_total", "counter", ("method", "endpoint", "status"), "{request}", (),
        _SPAN, spans="kind SERVER with http.route",
    ),
    SeriesSpec(
        "http_request_duration_seconds", "histogram", ("method", "endpoint"), "s",
        HTTP_REQUEST_DURATION_BUCKETS, _SPAN, spans="kind SERVER with http.route",
    ),
    SeriesSpec(
        "conversation_requests_total", "counter", (), "{request}", (), _SPAN,
        spans="name conversation.process",
    ),
    SeriesSpec(
        "conversation_processing_duration_seconds", "histogram", (), "s",
        CONVERSATION_PROCESSING_BUCKETS, _SPAN, spans="name conversation.process",
    ),
    SeriesSpec(
        "conversation_errors_total", "counter", ("error_type",), "{error}", (), _SPAN,
        spans="name conversation.process, status ERROR",
    ),
    SeriesSpec(
        "slm_requests_total", "counter", ("model",), "{request}", (), _SPAN,
        spans="gen_ai.operation.name=chat",
    ),
    SeriesSpec(
        "slm_latency_seconds", "histogram", ("model",), "s", SLM_LATENCY_BUCKETS, _SPAN,
        spans="gen_ai.operation.name=chat",
    ),
    SeriesSpec(
        "tool_execution_total", "counter", ("tool_name", "status"), "{execution}", (), _SPAN,
        spans="gen_ai.operation.name=execute_tool",
    ),
    SeriesSpec(
        "tool_execution_duration_seconds", "histogram", ("tool_name",), "s",
        TOOL_EXECUTION_DURATION_BUCKETS, _SPAN, spans="gen_ai.operation.name=execute_tool",
    ),
    SeriesSpec(
        "tool_execution_failures_total", "counter", ("tool_name", "error_type"), "{execution}",
        (), _SPAN, spans="gen_ai.operation.name=execute_tool, status ERROR",
    ),
)

#: Series a collector receiver produces, renamed in collector-config/config.yaml. The labels are
#: the receiver's attributes of the metric (kafkametrics v0.161: ``group``, ``topic``); the unit
#: is cleared, since the receiver's ``1`` would make the exporter append ``_ratio``.
COLLECTOR_DERIVED_SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec(
        "kafka_consumer_lag", "gauge", ("group", "topic"), "", (), "collector",
        instrument="kafka.consumer_group.lag_sum",
    ),
)

#: What the collector's redaction processors redacted, per sender (``job``, ``instance``),
#: signal and rule: ``signal_to_metrics/redactions`` sums the items' counts under
#: ``instrument`` (collector-config/render_redaction.py), the exporter appends ``_total``.
REDACTION_SERIES = SeriesSpec(
    "soma_collector_redacted_values_total", "counter", ("signal", "rule"), "{value}", (),
    "collector-redaction", instrument="soma_collector_redacted_values",
)
