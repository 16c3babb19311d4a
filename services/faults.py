"""Fault switches: runtime toggles that make real faults happen, as the OpenTelemetry Demo's
feature flags do.

Each service serves ``GET``/``POST``/``DELETE /admin/faults`` on its own port, answering only
clients on loopback (403 otherwise). ``POST`` merges the given fields into the current switches
(unknown fields or out-of-range values: 422), ``DELETE`` turns every fault off, and each answers
the switches now in force. ``SOMA_FAULTS`` (a JSON object) sets them at startup.

========================  ===========  ==========================================================
switch                    service      effect (each is a real fault, nothing is simulated)
========================  ===========  ==========================================================
``gateway_5xx_ratio``     gateway      share of ``/v1/...`` requests answered 500
                                       ``{"error": "injected_fault"}`` (deterministic, below)
``slm_delay_seconds``     worker       sleeps this long inside each ``chat {model}`` span before
                                       calling the SLM (real latency in ``slm_latency_seconds``)
``budget_exhausted``      worker       every budget check runs against limit 0: real refusals,
                                       ``budget_limit_reached_total`` and over-budget replies
``consumer_stuck``        worker       the conversation consumer stops taking records (the
                                       current handler blocks before its work): lag builds up
``poison_marker``         worker       a message whose text contains it makes the handler raise
                                       ``PoisonMessageError``: retried, then dead-lettered
``tool_failure_ratio``    executor     share of sandbox runs whose child process raises
                                       ``RuntimeError`` inside the tool (deterministic, below)
``tool_failure_marker``   executor     a tool request whose arguments contain it always raises
                                       in the child: retried, then ``tool.requests.dlq``
========================  ===========  ==========================================================

Ratios are deterministic, so tests can predict exact counts: the n-th eligible event (counting
from 1 since the ratio was last set) fails iff ``floor(n*r) > floor((n-1)*r)``, which spreads
exactly ``floor(N*r)`` failures evenly over the first N events.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class DeterministicRatio:
    """Decide failures for a ratio ``r``: the n-th call fails iff floor(n*r) > floor((n-1)*r)."""

    def __init__(self, ratio: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._ratio = ratio
        self._count = 0

    def reset(self, ratio: float) -> None:
        """Use ``ratio`` from now on and restart the count."""
        with self._lock:
            self._ratio = ratio
            self._count = 0

    def next_fails(self) -> bool:
        """Count one event and tell whether it must fail."""
        with self._lock:
            if self._ratio <= 0:
                return False
            self._count += 1
            n, r = self._count, self._ratio
            return math.floor(n * r + 1e-9) > math.floor((n - 1) * r + 1e-9)


class GatewayFaults(BaseModel):
    """The gateway's switches."""

    model_config = ConfigDict(extra="forbid")
    gateway_5xx_ratio: float = Field(0.0, ge=0.0, le=1.0)


class WorkerFaults(BaseModel):
    """The conversation worker's switches."""

    model_config = ConfigDict(extra="forbid")
    slm_delay_seconds: float = Field(0.0, ge=0.0, le=120.0)
    budget_exhausted: bool = False
    consumer_stuck: bool = False
    poison_marker: str | None = Field(None, min_length=4, max_length=200)


class ExecutorFaults(BaseModel):
    """The tool executor's switches."""

    model_config = ConfigDict(extra="forbid")
    tool_failure_ratio: float = Field(0.0, ge=0.0, le=1.0)
    tool_failure_marker: str | None = Field(None, min_length=4, max_length=200)


F = TypeVar("F", bound=BaseModel)


class FaultState(Generic[F]):
    """The switches in force, and listeners told after every change."""

    def __init__(self, model: type[F], initial_json: str = "") -> None:
        self._model = model
        self.current: F = model.model_validate_json(initial_json) if initial_json else model()
        self._listeners: list[Callable[[F], None]] = []

    def on_change(self, listener: Callable[[F], None]) -> None:
        """Call ``listener(current)`` now and after every change."""
        self._listeners.append(listener)
        listener(self.current)

    def update(self, patch: dict[str, object]) -> F:
        """Merge ``patch`` into the switches (validated as a whole); return the result."""
        merged = self._model.model_validate({**self.current.model_dump(), **patch})
        self._set(merged)
        return merged

    def reset(self) -> F:
        """Turn every fault off; return the result."""
        self._set(self._model())
        return self.current

    def _set(self, value: F) -> None:
        self.current = value
        for listener in self._listeners:
            listener(value)


def is_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` is on loopback: 127.0.0.0/8, ::1 or IPv4-mapped ::ffff:127.0.0.0/104."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def require_loopback(request: Request) -> None:
    """Refuse (403) a request whose client address is not a loopback IP address.

    The client address is the one the ASGI server reports: uvicorn replaces the peer's with
    the ``X-Forwarded-For`` client when the peer is loopback (``forwarded_allow_ips``), so a
    request relayed by a local proxy for a remote client is refused too. No address (a Unix
    socket) and one that is not an IP address (``localhost``, a garbage ``X-Forwarded-For``)
    are refused as well.
    """
    host = request.client.host if request.client else None
    if host is None:
        reason = "this request has no client address"
    else:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            reason = "the client address (X-Forwarded-For?) is not an IP address"
        else:
            if is_loopback(ip):
                return
            reason = f"client {ip} is not on loopback"
    raise HTTPException(
        status_code=403, detail=f"admin endpoints answer loopback clients only: {reason}"
    )


def faults_router(state: FaultState[F]) -> APIRouter:
    """Return the ``/admin/faults`` routes (loopback only) operating on ``state``."""
    router = APIRouter(prefix="/admin", dependencies=[Depends(require_loopback)])

    @router.get("/faults")
    async def get_faults() -> dict[str, object]:
        return state.current.model_dump()

    @router.post("/faults")
    async def set_faults(patch: dict[str, object] = Body(...)) -> dict[str, object]:  # noqa: B008
        try:
            return state.update(patch).model_dump()
        except ValidationError as exc:
            raise HTTPException(
                status_code=422, detail=exc.errors(include_url=False, include_context=False)
            ) from exc

    @router.delete("/faults")
    async def reset_faults() -> dict[str, object]:
        return state.reset().model_dump()

    return router
