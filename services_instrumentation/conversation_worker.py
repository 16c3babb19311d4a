"""Conversation worker instruments (spec 2.2, minus the span-derived ``conversation_*`` and
``slm_requests_total``/``slm_latency_seconds`` series).

================================  ========  =================  ================
series                            instr.    labels             unit
================================  ========  =================  ================
slm_tokens_total                  Counter   model, type        ``{token}``
budget_tokens_consumed_total      Counter   tenant, persona_id ``{token}``
budget_limit_reached_total        Counter   tenant, persona_id ``{event}``
intent_classification_total       Counter   intent             ``{classification}``
================================  ========  =================  ================

``type`` is ``input`` or ``output`` (the spec's values; ``gen_ai.token.type`` uses the same).
"""

from __future__ import annotations

from typing import Final

from opentelemetry import metrics

__all__ = ["METER_NAME", "ConversationWorkerInstruments", "create_instruments"]

METER_NAME: Final = "services_instrumentation.conversation_worker"


def _non_negative(name: str, value: int) -> int:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


class ConversationWorkerInstruments:
    """The conversation worker's instruments on one MeterProvider."""

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(METER_NAME)
        self.slm_tokens = meter.create_counter(
            "slm_tokens_total", unit="{token}", description="Total tokens processed"
        )
        self.budget_tokens_consumed = meter.create_counter(
            "budget_tokens_consumed_total", unit="{token}", description="Total tokens consumed"
        )
        self.budget_limit_reached = meter.create_counter(
            "budget_limit_reached_total", unit="{event}", description="Budget limit violations"
        )
        self.intent_classifications = meter.create_counter(
            "intent_classification_total",
            unit="{classification}",
            description="Intent classifications",
        )

    def slm_tokens_used(self, *, model: str, input_tokens: int, output_tokens: int) -> None:
        """Count the tokens of one SLM call."""
        self.slm_tokens.add(
            _non_negative("input_tokens", input_tokens), {"model": model, "type": "input"}
        )
        self.slm_tokens.add(
            _non_negative("output_tokens", output_tokens), {"model": model, "type": "output"}
        )

    def budget_consumed(self, *, tenant: str, persona_id: str, tokens: int) -> None:
        """Count tokens charged to a tenant's persona budget."""
        self.budget_tokens_consumed.add(
            _non_negative("tokens", tokens), {"tenant": tenant, "persona_id": persona_id}
        )

    def budget_limit_hit(self, *, tenant: str, persona_id: str) -> None:
        """Count one request refused because the budget is exhausted."""
        self.budget_limit_reached.add(1, {"tenant": tenant, "persona_id": persona_id})

    def intent_classified(self, *, intent: str) -> None:
        """Count one intent classification."""
        self.intent_classifications.add(1, {"intent": intent})


def create_instruments(
    meter_provider: metrics.MeterProvider | None = None,
) -> ConversationWorkerInstruments:
    """The conversation worker's instruments (global MeterProvider unless one is given)."""
    return ConversationWorkerInstruments(meter_provider)
