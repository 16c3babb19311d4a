"""The SomaAgent gateway: authenticated HTTP and WebSocket front door (port 8010).

Run (the supervisor's command line; ``docs/services.md`` has the full environment)::

    OTEL_SERVICE_NAME=gateway OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    OTEL_SEMCONV_STABILITY_OPT_IN=http OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true \\
    OTEL_METRIC_EXPORT_INTERVAL=5000 .venv/bin/opentelemetry-instrument python -m services.gateway

API (every ``/v1`` call needs ``Authorization: Bearer <api key>``; every error is JSON
``{"error": code, "message": text}``):

=====================================  ==========================================================
``POST /v1/sessions``                  body ``{"persona_id": "default"}`` (optional) -> 201
                                       ``{"session_id", "persona_id"}``
``POST /v1/sessions/{id}/messages``    body ``{"text": "..."}`` (1..4000 characters, body at
                                       most 16 KiB; optional ``"max_reply_tokens"``, an
                                       integer 1..``SLM_MAX_TOKENS``) -> 202
                                       ``{"message_id", "trace_id"}``; the event goes to
                                       Kafka ``conversation.events``
``GET /v1/sessions/{id}/messages``     -> 200 ``{"session_id", "messages": [...]}`` oldest first
``WS /v1/sessions/{id}/stream``        each reply of the session as a JSON text frame
``GET /healthz``, ``GET /readyz``      liveness; readiness (503 when Kafka, Redis or
                                       PostgreSQL is unreachable)
``POST /admin/tenants``                loopback only: create a tenant and return a new API key
``/admin/faults``                      loopback only: fault switches (:mod:`services.faults`)
=====================================  ==========================================================

Errors: 400 ``malformed_json``; 401 ``missing_api_key`` / ``invalid_api_key``; 403
``policy_denied``; 404 ``session_not_found`` (also for another tenant's session: existence is
not disclosed); 413 ``payload_too_large``; 415 ``unsupported_media_type``; 422
``invalid_request`` (with ``details``); 429 ``rate_limited``; 503 ``unavailable``.

Telemetry: the server spans (:mod:`otel._fastapi`) carry the route template
(``/v1/sessions/{session_id}/messages``), never raw ids; the counters are those of
:mod:`services_instrumentation.gateway`. A request with ``X-Soma-Debug-Trace: 1`` is always
kept by the tail sampler (see :mod:`services.common.telemetry`).
"""
