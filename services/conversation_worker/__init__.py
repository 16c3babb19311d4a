"""The SomaAgent conversation worker: ``conversation.events`` -> SLM (+ tools) -> replies.

Run (``docs/services.md`` has the full environment)::

    OTEL_SERVICE_NAME=conversation-worker OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    OTEL_SEMCONV_STABILITY_OPT_IN=http OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true \\
    OTEL_METRIC_EXPORT_INTERVAL=5000 \\
    .venv/bin/opentelemetry-instrument python -m services.conversation_worker

It consumes ``conversation.events`` as group ``conversation-worker`` (one record at a time,
retries and ``conversation.events.dlq`` from :class:`otel.dlq.EventConsumer`), reads
``tool.results`` from the end of every partition without a group (so each instance sees the
results of its own requests; its poison records go to ``tool.results.dlq`` through the
``conversation-worker-dlq-guard`` group, :class:`services.common.kafka.TopicTail`), and
serves on port 8011: ``GET /healthz``, ``GET /readyz`` (503
when Kafka, Redis, PostgreSQL or the SLM is unreachable) and the loopback-only
``/admin/faults`` (:class:`services.faults.WorkerFaults`).

What one event goes through, and which series it feeds: :mod:`.worker`. The intent rules:
:mod:`.intent`. Budgets: :mod:`.budget`. The SLM call and its span: :mod:`.slm`.
"""
