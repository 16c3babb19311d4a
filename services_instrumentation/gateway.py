"""Gateway instruments (spec 2.1, minus the span-derived ``http_*`` series).

==============================  =============  ===========  ==============================
series                          instrument     labels       unit
==============================  =============  ===========  ==============================
sessions_created_total          Counter        -            ``{session}``
auth_attempts_total             Counter        result       ``{attempt}``
policy_evaluations_total        Counter        result       ``{evaluation}``
websocket_connections_active    UpDownCounter  -            ``{connection}``
==============================  =============  ===========  ==============================

``websocket_connections_active`` is exported at 0 as soon as the instruments are created.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, Literal

from opentelemetry import metrics

__all__ = ["METER_NAME", "AuthResult", "GatewayInstruments", "PolicyResult", "create_instruments"]

METER_NAME: Final = "services_instrumentation.gateway"

AuthResult = Literal["success", "failure", "missing"]
PolicyResult = Literal["allow", "deny", "error"]


class GatewayInstruments:
    """The gateway's instruments on one MeterProvider."""

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(METER_NAME)
        self.sessions_created = meter.create_counter(
            "sessions_created_total", unit="{session}", description="Total sessions created"
        )
        self.auth_attempts = meter.create_counter(
            "auth_attempts_total", unit="{attempt}", description="Authentication attempts"
        )
        self.policy_evaluations = meter.create_counter(
            "policy_evaluations_total", unit="{evaluation}", description="OPA policy evaluations"
        )
        self.websocket_connections = meter.create_up_down_counter(
            "websocket_connections_active",
            unit="{connection}",
            description="Active WebSocket connections",
        )
        # The spec's gauge reads 0 from start-up: export the series (no attributes, as
        # websocket_connection() records it) before the first connection opens.
        self.websocket_connections.add(0)

    def session_created(self) -> None:
        """Count one created session."""
        self.sessions_created.add(1)

    def auth_attempt(self, *, result: AuthResult) -> None:
        """Count one authentication attempt (``success``, ``failure`` or ``missing``)."""
        self.auth_attempts.add(1, {"result": result})

    def policy_evaluation(self, *, result: PolicyResult) -> None:
        """Count one policy evaluation (``allow``, ``deny`` or ``error``)."""
        self.policy_evaluations.add(1, {"result": result})

    @contextmanager
    def websocket_connection(self) -> Iterator[None]:
        """Count a WebSocket connection as active while the block runs."""
        self.websocket_connections.add(1)
        try:
            yield
        finally:
            self.websocket_connections.add(-1)


def create_instruments(meter_provider: metrics.MeterProvider | None = None) -> GatewayInstruments:
    """The gateway's instruments (global MeterProvider unless one is given)."""
    return GatewayInstruments(meter_provider)
