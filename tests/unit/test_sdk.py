"""A lean span (otel._sdk.start_span) is the span the SDK's Tracer.start_span would make."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes

from otel._sdk import LeanSpan, start_span

_REMOTE_SAMPLED = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", "x")]))
_REMOTE_UNSAMPLED = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319D, 0xB7AD6B7169203332, is_remote=True,
    trace_flags=TraceFlags(TraceFlags.DEFAULT))
#: Fields that differ between any two spans.
_PER_SPAN = {"_context", "_lock", "_start_time", "_end_time", "_attributes", "_events", "_links",
             "_record_end_metrics"}


class _Recorder(SimpleSpanProcessor):
    """Keeps what each hook saw, besides exporting to memory."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        super().__init__(self.memory)
        self.started: list[Span] = []
        self.ending: list[Span] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started.append(span)

    def _on_ending(self, span: Span) -> None:
        self.ending.append(span)


def _pair(sampler: Sampler = DEFAULT_ON, limits: SpanLimits | None = None,
          ) -> tuple[trace.Tracer, _Recorder]:
    recorder = _Recorder()
    provider = TracerProvider(sampler=sampler, span_limits=limits or SpanLimits(),
                              resource=Resource.create({"service.name": "sdk-test"}))
    provider.add_span_processor(recorder)
    return provider.get_tracer("otel.test", "1.0"), recorder


def _both(tracer: trace.Tracer, name: str, context: Context | None, kind: SpanKind,
          attributes: Attributes) -> tuple[trace.Span, trace.Span]:
    return (tracer.start_span(name, context, kind=kind, attributes=attributes),
            start_span(tracer, name, context, kind, attributes))


def _recorded(tracer: trace.Tracer, name: str, context: Context | None, kind: SpanKind,
              attributes: Attributes) -> tuple[Span, Span]:
    sdk, lean = _both(tracer, name, context, kind, attributes)
    assert isinstance(sdk, Span) and isinstance(lean, Span)
    return sdk, lean


def _fields(span: trace.Span) -> dict[str, Any]:
    fields = {k: v for k, v in vars(span).items() if k not in _PER_SPAN}
    fields["_status"] = _status(fields["_status"])
    return fields


def _status(status: Status) -> tuple[StatusCode, str | None]:
    return status.status_code, status.description


def _parents() -> Iterator[tuple[str, Context | None]]:
    yield "root", None
    yield "remote sampled", trace.set_span_in_context(NonRecordingSpan(_REMOTE_SAMPLED))
    yield "local sampled", trace.set_span_in_context(NonRecordingSpan(SpanContext(
        _REMOTE_SAMPLED.trace_id, 0x1234, is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("local", "y")]))))


@pytest.mark.parametrize("label,context", list(_parents()), ids=[p[0] for p in _parents()])
def test_lean_span_has_the_sdk_spans_fields(label: str, context: Context | None) -> None:
    """Every field of a lean span equals the SDK span's, ids and times aside."""
    tracer, _ = _pair()
    sdk, lean = _recorded(tracer, "GET", context, SpanKind.SERVER, {"http.request.method": "GET"})
    assert type(lean) is LeanSpan and isinstance(lean, Span)
    assert vars(lean).keys() == vars(sdk).keys()
    assert _fields(lean) == _fields(sdk)
    sdk_context, lean_context = sdk.get_span_context(), lean.get_span_context()
    assert (lean_context.trace_flags, lean_context.trace_state, lean_context.is_remote) == (
        sdk_context.trace_flags, sdk_context.trace_state, sdk_context.is_remote)
    if context is not None:
        assert lean_context.trace_id == sdk_context.trace_id
    assert lean_context.span_id != sdk_context.span_id


@pytest.mark.parametrize("sampler", [ALWAYS_OFF, DEFAULT_ON, ParentBased(ALWAYS_ON)],
                         ids=["always_off", "default parentbased", "another parentbased"])
def test_unsampled_spans_are_non_recording_as_in_the_sdk(sampler: Sampler) -> None:
    """A span the sampler drops is a NonRecordingSpan with the SDK's flags, and is not exported."""
    tracer, recorder = _pair(sampler)
    context = trace.set_span_in_context(NonRecordingSpan(_REMOTE_UNSAMPLED))
    sdk, lean = _both(tracer, "GET", context, SpanKind.SERVER, None)
    assert type(lean) is type(sdk) is NonRecordingSpan
    assert lean.get_span_context().trace_flags == sdk.get_span_context().trace_flags
    lean.end()
    assert recorder.memory.get_finished_spans() == ()


def test_a_disabled_tracer_gives_the_parent_context() -> None:
    """A tracer disabled by its configurator returns the parent's context, as the SDK does."""
    provider = TracerProvider(sampler=ALWAYS_ON)
    tracer = provider.get_tracer("otel.test")
    tracer._is_enabled = lambda: False  # type: ignore[attr-defined]
    context = trace.set_span_in_context(NonRecordingSpan(_REMOTE_SAMPLED))
    span = start_span(tracer, "x", context, SpanKind.INTERNAL, None)
    assert type(span) is NonRecordingSpan and span.get_span_context() == _REMOTE_SAMPLED


def test_other_tracers_make_their_own_spans() -> None:
    """A tracer that is not the SDK's (the no-op tracer here) makes the span itself."""
    span = start_span(trace.NoOpTracer(), "x", None, SpanKind.CLIENT, {"a": 1})
    assert type(span) is NonRecordingSpan


_ATTRIBUTE_CASES: Mapping[str, dict[str, Any]] = {
    "plain": {"s": "GET", "i": 200, "f": 0.5, "b": True},
    "sequences": {"list": ["a", "b"], "ints": [1, 2]},
    "invalid values": {"none": None, "obj": object(), "bytes": b"\x00"},
    "invalid keys": {"": "empty", "ok": "fine"},
    "long strings": {"short": "abc", "long": "x" * 40},
    "over the count limit": {f"k{i}": i for i in range(6)},
}


@pytest.mark.parametrize("case", list(_ATTRIBUTE_CASES))
def test_start_attributes_are_cleaned_and_limited_as_in_the_sdk(case: str) -> None:
    """Start attributes: same values, order and dropped count under span limits."""
    tracer, _ = _pair(limits=SpanLimits(max_span_attributes=4, max_span_attribute_length=8))
    sdk, lean = _recorded(tracer, "x", None, SpanKind.INTERNAL, _ATTRIBUTE_CASES[case])
    for span in (sdk, lean):
        span.end()
    assert list((lean.attributes or {}).items()) == list((sdk.attributes or {}).items())
    assert lean.dropped_attributes == sdk.dropped_attributes


@pytest.mark.parametrize("later", [
    {"http.route": "/v1", "http.response.status_code": 200},
    {"a": "replaced first key"},
    {"long": "y" * 40, "list": [1, 2]},
    {f"n{i}": i for i in range(4)},
], ids=["new plain", "existing key", "needs cleaning", "overflow"])
def test_later_attributes_are_set_as_in_the_sdk(later: dict[str, Any]) -> None:
    """set_attributes on a lean span gives the SDK span's attributes, in the SDK's order."""
    tracer, _ = _pair(limits=SpanLimits(max_span_attributes=4, max_span_attribute_length=8))
    sdk, lean = _recorded(tracer, "x", None, SpanKind.INTERNAL, {"a": 1, "b": "two"})
    for span in (sdk, lean):
        span.set_attributes(later)
        span.end()
    assert list((lean.attributes or {}).items()) == list((sdk.attributes or {}).items())
    assert lean.dropped_attributes == sdk.dropped_attributes


def test_an_ended_lean_span_ignores_changes(caplog: pytest.LogCaptureFixture) -> None:
    """After end(), attributes, name and status stay as they were and a warning says why."""
    tracer, _ = _pair()
    span = start_span(tracer, "x", None, SpanKind.INTERNAL, {"a": 1})
    span.end()
    with caplog.at_level(logging.WARNING):
        span.set_attributes({"b": 2})
        span.set_attribute("c", 3)
        span.update_name("y")
        span.set_status(Status(StatusCode.ERROR))
    assert isinstance(span, ReadableSpan)
    assert (dict(span.attributes or {}), span.name, span.status.status_code) == (
        {"a": 1}, "x", StatusCode.UNSET)
    assert "Setting attribute on ended span." in caplog.text


def test_processors_see_the_lean_span_through_its_life() -> None:
    """on_start, _on_ending and on_end get the span; the export equals the SDK span's."""
    tracer, recorder = _pair()
    context = trace.set_span_in_context(NonRecordingSpan(_REMOTE_SAMPLED))
    sdk, lean = _recorded(tracer, "send", context, SpanKind.PRODUCER, {"messaging.system": "kafka"})
    for span in (sdk, lean):
        span.add_event("retry", {"attempt": 2})
        span.set_status(Status(StatusCode.ERROR, "Timeout"))
        span.end()
    assert recorder.started == [sdk, lean] and recorder.ending == [sdk, lean]
    exported_sdk, exported_lean = recorder.memory.get_finished_spans()
    assert exported_lean is lean
    keep = ("name", "kind", "parent", "attributes", "resource",
            "instrumentation_scope", "dropped_attributes", "dropped_events", "dropped_links")
    assert {k: getattr(exported_lean, k) for k in keep} == {
        k: getattr(exported_sdk, k) for k in keep}
    assert _status(exported_lean.status) == _status(exported_sdk.status)
    assert [(e.name, dict(e.attributes or {})) for e in exported_lean.events] == [
        (e.name, dict(e.attributes or {})) for e in exported_sdk.events]
    assert exported_lean.start_time is not None and exported_lean.end_time is not None
    assert exported_lean.start_time <= exported_lean.end_time
    assert type(exported_lean._attributes) is BoundedAttributes


class _Tagging(Sampler):
    """Samples everything, adds an attribute and replaces the trace state."""

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Any = None, trace_state: TraceState | None = None,
                      ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {**(attributes or {}), "rule": name},
                              TraceState([("tagged", "1")]))

    def get_description(self) -> str:
        return "Tagging"


@pytest.mark.parametrize("label,context", list(_parents()), ids=[p[0] for p in _parents()])
def test_another_samplers_attributes_and_trace_state_are_used(
        label: str, context: Context | None) -> None:
    """A sampler other than the default one decides, adds attributes and sets the trace state."""
    tracer, _ = _pair(_Tagging())
    sdk, lean = _recorded(tracer, "GET", context, SpanKind.SERVER, {"a": 1})
    assert dict(lean.attributes or {}) == dict(sdk.attributes or {}) == {"a": 1, "rule": "GET"}
    assert lean.get_span_context().trace_state == sdk.get_span_context().trace_state


def test_events_and_links_belong_to_their_own_span(caplog: pytest.LogCaptureFixture) -> None:
    """An event or link added to one lean span shows on no other, nor after the span ended."""
    tracer, recorder = _pair()
    with_event, with_link, plain = (
        start_span(tracer, name, None, SpanKind.INTERNAL, None) for name in ("e", "l", "p"))
    with_event.add_event("retry", {"attempt": 1})
    with_link.add_link(_REMOTE_SAMPLED, {"why": "batch"})
    for span in (with_event, with_link, plain):
        span.end()
    with caplog.at_level(logging.WARNING):
        plain.add_event("late")
        plain.add_link(_REMOTE_UNSAMPLED)
    later = start_span(tracer, "later", None, SpanKind.INTERNAL, None)
    later.end()
    spans = {span.name: span for span in recorder.memory.get_finished_spans()}
    assert [(e.name, dict(e.attributes or {})) for e in spans["e"].events] == [
        ("retry", {"attempt": 1})]
    assert [(ln.context, dict(ln.attributes or {})) for ln in spans["l"].links] == [
        (_REMOTE_SAMPLED, {"why": "batch"})]
    assert (spans["e"].links, spans["l"].events) == ((), ())
    assert (spans["p"].events, spans["p"].links, spans["later"].events) == ((), (), ())
    assert "Tried calling _add_event on an ended span." in caplog.text


def test_processors_added_later_see_the_next_spans_start() -> None:
    """A span processor added after spans were made gets on_start for every later span."""
    tracer, first = _pair()
    early = start_span(tracer, "early", None, SpanKind.INTERNAL, None)
    second = _Recorder()
    tracer.span_processor.add_span_processor(second)  # type: ignore[attr-defined]
    late = start_span(tracer, "late", None, SpanKind.INTERNAL, None)
    assert (first.started, second.started) == ([early, late], [late])


def test_an_on_start_set_on_a_processor_instance_is_called() -> None:
    """A batch processor whose instance has its own on_start gets every lean span's start."""
    tracer, _ = _pair()
    started: list[trace.Span] = []
    batch = BatchSpanProcessor(InMemorySpanExporter())
    batch.on_start = lambda span, parent_context=None: started.append(span)  # type: ignore[method-assign]
    tracer.span_processor.add_span_processor(batch)  # type: ignore[attr-defined]
    span = start_span(tracer, "x", None, SpanKind.INTERNAL, None)
    batch.shutdown()
    assert started == [span]
