"""SomaAgent's OpenTelemetry library: one-call setup, conventional spans, scrubbed JSON logs.

Quick start (standalone; under ``opentelemetry-instrument`` the same call adds only what the
library owns)::

    import otel

    telemetry = otel.configure(service_name="gateway", service_version="1.4.0")
    ...
    telemetry.shutdown()

The manual of each part is its module's docstring: :mod:`otel._setup` (modes, resource,
sampling), :mod:`otel._config` (every setting and its environment variable),
:mod:`otel._spans` (span conventions), :mod:`otel._logging` (JSON lines, OTLP logs),
:mod:`otel._scrubbing` (what is redacted and how), :mod:`otel._instruments` and
:mod:`otel._catalog` (metrics). ``docs/setup.md`` and ``docs/metrics.md`` are the user guides.

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

# Kafka propagation (otel/kafka/) and the DLQ (otel/dlq/) are written separately; their public
# names are re-exported here, below this line, when they land.

__all__ = [
    "REDACTED",
    "SOMA_SAMPLING_KEEP",
    "SPAN_DERIVED_SERIES",
    "ConfigurationError",
    "JsonFormatter",
    "LibraryInstruments",
    "OtlpLoggingHandler",
    "ScrubbingFilter",
    "ScrubbingSpanProcessor",
    "SeriesSpec",
    "Settings",
    "Telemetry",
    "configure",
    "conversation_process",
    "error_type_of",
    "execute_tool",
    "library_instruments",
    "mark_keep",
    "record_chat_response",
    "record_failure",
    "slm_chat",
]
