"""Spans shaped as ``docs/conventions.md`` requires, so the collector's spanmetrics can derive the
spec's RED series from them.

=================================  ========================================================
helper                             span
=================================  ========================================================
:func:`conversation_process`       ``conversation.process`` (INTERNAL)
:func:`slm_chat`                   ``chat {model}`` (CLIENT), ``gen_ai.operation.name=chat``,
                                   ``gen_ai.request.model``; :func:`record_chat_response` adds
                                   ``gen_ai.response.model`` and ``gen_ai.usage.*_tokens``
:func:`execute_tool`               ``execute_tool {tool}`` (INTERNAL),
                                   ``gen_ai.operation.name=execute_tool``, ``gen_ai.tool.name``
:func:`record_failure`             status ERROR + ``error.type`` (+ exception event)
:func:`mark_keep`                  ``soma.sampling.keep=true``: the tail sampler keeps the trace
=================================  ========================================================

Each context manager makes its span current. An exception leaving it marks the span failed with
``error.type`` = the exception's qualified class name (unless :func:`record_failure` already set a
short type such as ``slm_timeout``), records the exception, and re-raises.

Usage::

    with otel.conversation_process(conversation_id=cid):
        with otel.slm_chat("qwen2.5-0.5b") as span:
            reply = await slm.chat(...)
            otel.record_chat_response(span, response_model=reply.model,
                                      input_tokens=reply.usage.prompt_tokens,
                                      output_tokens=reply.usage.completion_tokens)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOOL_NAME,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GenAiOperationNameValues,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

__all__ = [
    "CONVERSATION_PROCESS_SPAN",
    "SOMA_CONVERSATION_ID",
    "SOMA_SAMPLING_KEEP",
    "TRACER_NAME",
    "conversation_process",
    "error_type_of",
    "execute_tool",
    "mark_keep",
    "record_chat_response",
    "record_failure",
    "slm_chat",
]

TRACER_NAME: Final = "otel"
CONVERSATION_PROCESS_SPAN: Final = "conversation.process"
#: Attribute that makes the collector's tail sampler keep the whole trace.
SOMA_SAMPLING_KEEP: Final = "soma.sampling.keep"
#: Project attribute identifying the conversation a span belongs to.
SOMA_CONVERSATION_ID: Final = "soma.conversation.id"


def error_type_of(exc: BaseException) -> str:
    """The ``error.type`` for an exception: its class's qualified name (builtins unprefixed)."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def record_failure(span: Span, error_type: str, exc: BaseException | None = None) -> None:
    """Mark ``span`` failed: status ERROR, ``error.type=error_type``, and the exception event.

    ``error_type`` is a short snake_case class (``slm_timeout``, ``tool_timeout``,
    ``limit_exceeded``, ``policy_blocked``, ``invalid_event``, ``budget_exhausted``) or an
    exception's qualified class name; it becomes a Prometheus label, so it must not carry ids.
    """
    if not error_type:
        raise ValueError("error_type must be a non-empty string")
    span.set_attribute(ERROR_TYPE, error_type)
    description = f"{error_type}: {exc}" if exc is not None else error_type
    span.set_status(Status(StatusCode.ERROR, description))
    if exc is not None:
        span.record_exception(exc)


def fail_span(span: Span, error: BaseException) -> None:
    """Mark a client span failed by ``error`` raised out of the call it traces: the exception
    event, ``error.type`` (its qualified class) and status ERROR described by the class name
    alone (the message stays in the event, which the scrubber sees)."""
    span.record_exception(error)
    span.set_attributes({ERROR_TYPE: error_type_of(error)})
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def mark_keep(span: Span) -> None:
    """Make the collector's tail sampler keep this span's trace (``soma.sampling.keep=true``)."""
    span.set_attribute(SOMA_SAMPLING_KEEP, True)


def _tracer(tracer_provider: trace.TracerProvider | None) -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)


@contextmanager
def _span(
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, AttributeValue],
    tracer_provider: trace.TracerProvider | None,
) -> Iterator[Span]:
    with _tracer(tracer_provider).start_as_current_span(
        name,
        kind=kind,
        attributes=dict(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            existing = getattr(span, "attributes", None) or {}
            error_type = existing.get(ERROR_TYPE) if isinstance(existing, Mapping) else None
            if not isinstance(error_type, str) or not error_type:
                error_type = error_type_of(exc)
                record_failure(span, error_type, exc)
            else:
                span.set_status(Status(StatusCode.ERROR, f"{error_type}: {exc}"))
                span.record_exception(exc)
            raise


@contextmanager
def conversation_process(
    *,
    conversation_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Iterator[Span]:
    """The ``conversation.process`` span around handling one conversation event."""
    attrs: dict[str, AttributeValue] = dict(attributes or {})
    if conversation_id is not None:
        attrs[SOMA_CONVERSATION_ID] = conversation_id
    with _span(CONVERSATION_PROCESS_SPAN, SpanKind.INTERNAL, attrs, tracer_provider) as span:
        yield span


@contextmanager
def slm_chat(
    model: str,
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Iterator[Span]:
    """The CLIENT span ``chat {model}`` around one chat call to the SLM."""
    if not model:
        raise ValueError("model must be a non-empty string")
    attrs: dict[str, AttributeValue] = dict(attributes or {})
    attrs[GEN_AI_OPERATION_NAME] = GenAiOperationNameValues.CHAT.value
    attrs[GEN_AI_REQUEST_MODEL] = model
    with _span(f"chat {model}", SpanKind.CLIENT, attrs, tracer_provider) as span:
        yield span


def record_chat_response(
    span: Span, *, response_model: str, input_tokens: int, output_tokens: int
) -> None:
    """Add the response model and token usage to an :func:`slm_chat` span."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts must be >= 0")
    span.set_attribute(GEN_AI_RESPONSE_MODEL, response_model)
    span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, input_tokens)
    span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens)


@contextmanager
def execute_tool(
    tool_name: str,
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Iterator[Span]:
    """The ``execute_tool {tool}`` span around one tool execution."""
    if not tool_name:
        raise ValueError("tool_name must be a non-empty string")
    attrs: dict[str, AttributeValue] = dict(attributes or {})
    attrs[GEN_AI_OPERATION_NAME] = GenAiOperationNameValues.EXECUTE_TOOL.value
    attrs[GEN_AI_TOOL_NAME] = tool_name
    with _span(f"execute_tool {tool_name}", SpanKind.INTERNAL, attrs, tracer_provider) as span:
        yield span
