"""SomaAgent's OpenTelemetry library: one-call setup, conventional spans, scrubbed JSON logs.

With the package installed, a service run under ``opentelemetry-instrument`` needs no code at
all: the package's distro (:mod:`otel._distro`) sets it up before the service's first line.

Quick start (standalone; under ``opentelemetry-instrument`` the same call returns the distro's
setup)::

    import otel

    telemetry = otel.configure(service_name="gateway", service_version="1.4.0")
    ...
    telemetry.shutdown()

The manual of each part is its module's docstring: :mod:`otel._setup` (modes, resource,
sampling), :mod:`otel._config` (every setting and its environment variable),
:mod:`otel._spans` (span conventions), :mod:`otel._logging` (JSON lines, OTLP logs),
:mod:`otel._scrubbing` (what is redacted and how), :mod:`otel._instruments` and
:mod:`otel._catalog` (metrics), :mod:`otel._distro` (the distro), :mod:`otel.testing` (the
``otel_capture`` pytest fixture). ``docs/setup.md`` and ``docs/metrics.md`` are the user guides.

This module only re-exports.
"""

from otel._catalog import SPAN_DERIVED_SERIES, SeriesSpec
from otel._config import ConfigurationError, Settings
from otel._instruments import LibraryInstruments, library_instruments
from otel._logging import JsonFormatter, OtlpLoggingHandler, ScrubbingFilter
from otel._scrubbing import REDACTED, ScrubbingSpanProcessor
from otel._setup import Telemetry, configure
from otel._spans import (
    SOMA_SAMPLING_KEEP,
    conversation_process,
    error_type_of,
    execute_tool,
    mark_keep,
    record_chat_response,
    record_failure,
    slm_chat,
)

# Kafka propagation (otel.kafka) and the DLQ (otel.dlq) need aiokafka: their names resolve on
# first use, so that `import otel` stays light for services without Kafka.
_LAZY = {
    "send_event": "otel.kafka",
    "process_span": "otel.kafka",
    "extract_context": "otel.kafka",
    "Backoff": "otel.dlq",
    "EventConsumer": "otel.dlq",
    "InvalidEventError": "otel.dlq",
    "PermanentError": "otel.dlq",
    "RetryPolicy": "otel.dlq",
    "RetryableError": "otel.dlq",
    "UndecodableEventError": "otel.dlq",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'otel' has no attribute {name!r}")


__all__ = [
    "REDACTED",
    "SOMA_SAMPLING_KEEP",
    "SPAN_DERIVED_SERIES",
    "Backoff",
    "ConfigurationError",
    "EventConsumer",
    "InvalidEventError",
    "JsonFormatter",
    "LibraryInstruments",
    "OtlpLoggingHandler",
    "PermanentError",
    "RetryPolicy",
    "RetryableError",
    "ScrubbingFilter",
    "ScrubbingSpanProcessor",
    "SeriesSpec",
    "Settings",
    "Telemetry",
    "UndecodableEventError",
    "configure",
    "conversation_process",
    "error_type_of",
    "execute_tool",
    "extract_context",
    "library_instruments",
    "mark_keep",
    "process_span",
    "record_chat_response",
    "record_failure",
    "send_event",
    "slm_chat",
]
