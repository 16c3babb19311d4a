"""The SomaAgent tool executor: ``tool.requests`` -> sandboxed tool -> ``tool.results``.

Run (``docs/services.md`` has the full environment)::

    OTEL_SERVICE_NAME=tool-executor OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    OTEL_SEMCONV_STABILITY_OPT_IN=http OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true \\
    OTEL_METRIC_EXPORT_INTERVAL=5000 \\
    .venv/bin/opentelemetry-instrument python -m services.tool_executor

It consumes ``tool.requests`` as group ``tool-executor`` (retries and ``tool.requests.dlq`` from
:class:`otel.dlq.EventConsumer`) and serves on port 8012: ``GET /healthz``, ``GET /readyz``
(503 when Kafka or PostgreSQL is unreachable) and the loopback-only ``/admin/faults``
(:class:`services.faults.ExecutorFaults`).

The handling of a request and its telemetry: :mod:`.executor`. The sandbox: :mod:`.sandbox`
(parent side) and :mod:`.runner` (child side, with the tools).
"""
