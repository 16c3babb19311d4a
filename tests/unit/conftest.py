"""Fixtures of the unit tests: isolated OpenTelemetry globals and root logger per test.

OpenTelemetry lets a process set its global providers once. Tests of ``otel.configure()`` need a
fresh process state each, so ``fresh_otel`` puts the API's globals back to "never set" (as the
``opentelemetry-test-utils`` package does for the project's own tests) and restores the root
logger, the environment and ``otel._setup``'s state afterwards. Exporters are the SDK's
in-memory ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry._logs import _internal as logs_internal
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.util._once import Once

import otel._instruments
import otel._setup


def _reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
    logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()
    logs_internal._LOGGER_PROVIDER = None
    logs_internal._PROXY_LOGGER_PROVIDER = logs_internal.ProxyLoggerProvider()
    otel._instruments._cached = None
    otel._setup._active = None
    otel._setup._owned_providers.clear()


@pytest.fixture
def fresh_otel() -> Iterator[None]:
    """Fresh OpenTelemetry globals, root logger and environment for one test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    environ = dict(os.environ)
    _reset_globals()
    try:
        yield
    finally:
        active = otel._setup._active
        if active is not None:
            active.shutdown()
        root.handlers[:] = handlers
        root.setLevel(level)
        os.environ.clear()
        os.environ.update(environ)
        _reset_globals()
