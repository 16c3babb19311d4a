"""Span helpers produce the span names, kinds and attributes of docs/conventions.md."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import otel


class ToolTimeoutError(Exception):
    """A project exception, to check the qualified error.type."""


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_conversation_process_span_has_the_conventional_name_and_kind(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """conversation_process() makes one INTERNAL span named conversation.process, unset status."""
    provider, exporter = spans
    with otel.conversation_process(conversation_id="c-1", tracer_provider=provider):
        pass
    (span,) = exporter.get_finished_spans()
    assert (span.name, span.kind, span.status.status_code) == (
        "conversation.process", SpanKind.INTERNAL, StatusCode.UNSET,
    )
    assert dict(span.attributes or {}) == {"soma.conversation.id": "c-1"}


def test_slm_chat_is_a_client_span_with_gen_ai_attributes(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """slm_chat() + record_chat_response() give a CLIENT span 'chat {model}' with gen_ai.*."""
    provider, exporter = spans
    with otel.slm_chat("qwen2.5-0.5b", tracer_provider=provider) as span:
        otel.record_chat_response(
            span, response_model="qwen2.5-0.5b-q4", input_tokens=12, output_tokens=34
        )
    (finished,) = exporter.get_finished_spans()
    assert (finished.name, finished.kind) == ("chat qwen2.5-0.5b", SpanKind.CLIENT)
    assert dict(finished.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "qwen2.5-0.5b",
        "gen_ai.response.model": "qwen2.5-0.5b-q4",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 34,
    }


def test_execute_tool_span_carries_operation_and_tool_name(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """execute_tool() makes 'execute_tool {tool}' with gen_ai.operation.name and tool name."""
    provider, exporter = spans
    with otel.execute_tool("web_search", tracer_provider=provider):
        pass
    (span,) = exporter.get_finished_spans()
    assert (span.name, span.kind) == ("execute_tool web_search", SpanKind.INTERNAL)
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "web_search",
    }


def test_record_failure_sets_error_status_type_and_exception_event(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """record_failure() sets status ERROR, error.type, and one exception event."""
    provider, exporter = spans
    with otel.execute_tool("sandbox", tracer_provider=provider) as span:
        otel.record_failure(span, "tool_timeout", TimeoutError("30 s"))
    (finished,) = exporter.get_finished_spans()
    assert finished.status.status_code is StatusCode.ERROR
    assert finished.status.description == "tool_timeout: 30 s"
    assert (finished.attributes or {})["error.type"] == "tool_timeout"
    assert [e.name for e in finished.events] == ["exception"]
    assert (finished.events[0].attributes or {})["exception.type"] == "TimeoutError"


def test_escaping_exception_sets_qualified_class_name_as_error_type(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """An exception leaving the helper marks the span ERROR with the class's qualified name."""
    provider, exporter = spans
    with (
        pytest.raises(ToolTimeoutError),
        otel.conversation_process(tracer_provider=provider),
    ):
        raise ToolTimeoutError("late")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == f"{__name__}.ToolTimeoutError"
    assert len(span.events) == 1


def test_short_error_type_survives_an_escaping_exception(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A type set by record_failure() is kept when the exception then propagates."""
    provider, exporter = spans
    with (
        pytest.raises(TimeoutError),
        otel.slm_chat("m", tracer_provider=provider) as span,
    ):
        otel.record_failure(span, "slm_timeout")
        raise TimeoutError("no answer")
    (finished,) = exporter.get_finished_spans()
    assert (finished.attributes or {})["error.type"] == "slm_timeout"
    assert finished.status.status_code is StatusCode.ERROR


def test_mark_keep_sets_the_tail_sampling_attribute(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """mark_keep() sets soma.sampling.keep=true on the span."""
    provider, exporter = spans
    with otel.conversation_process(tracer_provider=provider) as span:
        otel.mark_keep(span)
    (finished,) = exporter.get_finished_spans()
    assert (finished.attributes or {})["soma.sampling.keep"] is True


def test_nested_helpers_form_one_trace(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Spans opened inside conversation_process() are its children in the same trace."""
    provider, exporter = spans
    with otel.conversation_process(tracer_provider=provider):
        with otel.slm_chat("m", tracer_provider=provider):
            pass
        with otel.execute_tool("t", tracer_provider=provider):
            pass
    chat, tool, parent = exporter.get_finished_spans()
    assert {chat.context.trace_id, tool.context.trace_id} == {parent.context.trace_id}
    assert chat.parent is not None and tool.parent is not None
    assert {chat.parent.span_id, tool.parent.span_id} == {parent.context.span_id}


def test_error_type_of_names_builtins_bare_and_others_qualified() -> None:
    """error_type_of() returns 'ValueError' for builtins and module.Class otherwise."""
    assert otel.error_type_of(ValueError()) == "ValueError"
    assert otel.error_type_of(ToolTimeoutError()) == f"{__name__}.ToolTimeoutError"


def test_record_failure_rejects_an_empty_error_type(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """An empty error.type would be an empty Prometheus label, so it is refused."""
    provider, _ = spans
    with otel.conversation_process(tracer_provider=provider) as span, pytest.raises(ValueError):
        otel.record_failure(span, "")
