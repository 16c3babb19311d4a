"""The spec's gauges are exported at 0 from start-up and count each open block while it runs."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from otel.testing import CapturedTelemetry
from services_instrumentation import gateway, tool_executor

#: (series, instruments factory, the block it counts while open)
GAUGES: list[tuple[str, Callable[[], Any], Callable[[Any], AbstractContextManager[None]]]] = [
    ("websocket_connections_active", gateway.create_instruments,
     lambda instruments: instruments.websocket_connection()),
    ("sandbox_active_executions", tool_executor.create_instruments,
     lambda instruments: instruments.sandbox_execution()),
]


def _gauge(capture: CapturedTelemetry, name: str) -> tuple[str, dict[str, object], float]:
    """(kind, attributes, value) of the metric's only series; fails if it has none or several."""
    point = capture.metric(name)
    return point.kind, dict(point.attributes), point.value


@pytest.mark.parametrize(("name", "create", "block"), GAUGES, ids=[g[0] for g in GAUGES])
def test_gauge_is_one_series_at_zero_before_any_block(
    otel_capture: CapturedTelemetry, name: str, create: Callable[[], Any],
    block: Callable[[Any], AbstractContextManager[None]],
) -> None:
    """Creating the service's instruments exports the gauge = 0, with no labels."""
    create()
    assert _gauge(otel_capture, name) == ("sum", {}, 0)


@pytest.mark.parametrize(("name", "create", "block"), GAUGES, ids=[g[0] for g in GAUGES])
def test_gauge_is_one_while_a_block_runs_and_zero_after(
    otel_capture: CapturedTelemetry, name: str, create: Callable[[], Any],
    block: Callable[[Any], AbstractContextManager[None]],
) -> None:
    """One connection or execution counts 1 while open and 0 after it ends, in the same series."""
    with block(create()):
        assert _gauge(otel_capture, name) == ("sum", {}, 1)
    assert _gauge(otel_capture, name) == ("sum", {}, 0)
