"""The spec's gauges are exported at 0 from start-up and count each open block while it runs."""

from __future__ import annotations

from otel.testing import CapturedTelemetry
from services_instrumentation import gateway, tool_executor


def _gauge(capture: CapturedTelemetry, name: str) -> tuple[str, dict[str, object], float]:
    """(kind, attributes, value) of the metric's only series; fails if it has none or several."""
    point = capture.metric(name)
    return point.kind, dict(point.attributes), point.value


def test_websocket_connections_active_is_one_series_at_zero_before_any_connection(
    otel_capture: CapturedTelemetry,
) -> None:
    """Creating the gateway's instruments exports websocket_connections_active = 0, no labels."""
    gateway.create_instruments()
    assert _gauge(otel_capture, "websocket_connections_active") == ("sum", {}, 0)


def test_websocket_connections_active_is_one_while_open_and_zero_after_close(
    otel_capture: CapturedTelemetry,
) -> None:
    """One WebSocket connection counts 1 while open and 0 after it closes, in the same series."""
    instruments = gateway.create_instruments()
    with instruments.websocket_connection():
        assert _gauge(otel_capture, "websocket_connections_active") == ("sum", {}, 1)
    assert _gauge(otel_capture, "websocket_connections_active") == ("sum", {}, 0)


def test_sandbox_active_executions_is_one_series_at_zero_before_any_execution(
    otel_capture: CapturedTelemetry,
) -> None:
    """Creating the tool executor's instruments exports sandbox_active_executions = 0, no labels."""
    tool_executor.create_instruments()
    assert _gauge(otel_capture, "sandbox_active_executions") == ("sum", {}, 0)


def test_sandbox_active_executions_is_one_while_running_and_zero_after(
    otel_capture: CapturedTelemetry,
) -> None:
    """One sandbox execution counts 1 while it runs and 0 after it ends, in the same series."""
    instruments = tool_executor.create_instruments()
    with instruments.sandbox_execution():
        assert _gauge(otel_capture, "sandbox_active_executions") == ("sum", {}, 1)
    assert _gauge(otel_capture, "sandbox_active_executions") == ("sum", {}, 0)
