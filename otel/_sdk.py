"""The SDK internals the library reads, in one place (pinned SDK 1.45.1, see requirements.lock).

* :func:`start_span`: ``Tracer.start_span`` for the library's own instrumentation, about a
  quarter of the SDK's CPU (4 us instead of 15 us for a SERVER span with 11 attributes on the
  benchmark machine). The SDK's path builds every span through ``Span.__init__`` (a default
  ``Resource`` check, a ``BoundedAttributes`` that cleans each value through a generic
  recursive function) and copies it into a new ``ReadableSpan`` when it ends. The lean span is
  the SDK's own span class (:class:`LeanSpan` subclasses ``Span``, so every method, processor
  and exporter treats it as one) with its fields set directly: the same sampling decision, ids,
  flags, limits, processors and self-metrics; attribute values that need no cleaning (``str``
  within the length limit, ``bool``, ``int``, ``float``) are stored as they are, any other
  attribute map goes through ``BoundedAttributes`` as in the SDK. An ended lean span is its own
  read-only view: every mutator of an SDK span is a no-op once it has ended. Three shortcuts
  with the same outcome: the default sampler's decision (``ParentBased(ALWAYS_ON)``, the
  ``DEFAULT_ON`` object) is taken inline; span processors whose ``on_start`` is the SDK's
  no-op are not called at start; a span gets its own event and link lists at its first event
  or link (most spans have none).
  ``tests/unit/test_sdk.py`` checks that a lean span has the SDK span's fields and values.
* :func:`frozen_attributes`: a finished span's attribute map without the Mapping protocol.
  ``ReadableSpan.attributes`` wraps the map in a ``MappingProxyType`` and ``BoundedAttributes``
  copies itself under a lock on iteration; both cost a call per key on every span. ``Span.end``
  freezes the map (``_immutable``) before any processor sees the span, so reading its dict is
  safe from then on.
* :func:`events_and_links`: a finished span's events and links, without the copy that
  ``ReadableSpan.events``/``.links`` make when there are none (most spans).
* Outside the SDK versions :mod:`otel._compat` verified (``lean_supported("sdk")``),
  :func:`start_span` is ``tracer.start_span`` and the two readers use the public properties.
* :func:`telemetry_failed`: how the lean modules report a failure of their own telemetry code
  (span start, attributes, propagation, span end, encoding), which they catch so that the
  request, command, send or receive runs as it would without them: one WARNING per module on
  the ``otel`` logger, with the traceback, the first time; later failures of the same module
  are counted (:func:`telemetry_failures`) and logged at DEBUG.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import (
    Event,
    EventBase,
    ReadableSpan,
    Span,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    Tracer,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Decision
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import AnyValue, Attributes

from otel._compat import lean_supported

__all__ = [
    "LeanSpan",
    "events_and_links",
    "frozen_attributes",
    "reset_telemetry_failures",
    "start_span",
    "telemetry_failed",
    "telemetry_failures",
]

_LOG = logging.getLogger("otel")
_FAILURES: Counter[str] = Counter()


def telemetry_failed(module: str, what: str) -> None:
    """Report that ``module``'s telemetry code failed while doing ``what`` (call it from an
    ``except`` block): one WARNING with the traceback per module, then DEBUG lines."""
    _FAILURES[module] += 1
    if _FAILURES[module] == 1:
        _LOG.warning("otel.%s: %s failed; the telemetry of this call is dropped and the call "
                     "goes on (further failures of this module are logged at DEBUG)",
                     module, what, exc_info=True)
    else:
        _LOG.debug("otel.%s: %s failed (%d failures)", module, what, _FAILURES[module],
                   exc_info=True)


def telemetry_failures(module: str) -> int:
    """How many times ``module``'s telemetry code failed in this process."""
    return _FAILURES[module]


def reset_telemetry_failures() -> None:
    """Forget the failure counts, so that the next failure warns again (tests)."""
    _FAILURES.clear()


#: Whether the lean span construction is used (:mod:`otel._compat`); None until first asked.
_lean: bool | None = None


def _lean_sdk() -> bool:
    global _lean
    if _lean is None:
        _lean = lean_supported("sdk")
    return _lean


_UNSET = Status(StatusCode.UNSET)
#: ``Decision.is_sampled()`` and ``not Decision.is_recording()`` (the SDK leaves them untyped).
_SAMPLED, _DROP = Decision.RECORD_AND_SAMPLE, Decision.DROP
#: Attribute value types that ``BoundedAttributes`` stores unchanged (strings up to a limit).
_PLAIN = frozenset({str, bool, int, float})
#: The events and links of every lean span that has none yet; never appended to (see
#: ``LeanSpan._add_event``).
_NONE_YET: BoundedList[Any] = BoundedList(0)
#: ``on_start`` methods that do nothing; a span processor with one of these is not called.
_NOOP_ON_START = frozenset({
    SpanProcessor.on_start, BatchSpanProcessor.on_start, SimpleSpanProcessor.on_start})


class LeanSpan(Span):
    """An SDK span made by :func:`start_span`; once ended it is its own ``ReadableSpan``."""

    def _readable_span(self) -> ReadableSpan:
        return self

    def _add_event(self, event: EventBase) -> None:
        """``Span._add_event``, giving the span its own event list at the first event."""
        with self._lock:
            if self._events is _NONE_YET and self._end_time is None:
                self._events = BoundedList(self._limits.max_events)
        super()._add_event(event)

    def _add_link(self, link: Link) -> None:
        """``Span._add_link``, giving the span its own link list at the first link."""
        with self._lock:
            if self._links is _NONE_YET and self._end_time is None:
                self._links = BoundedList(self._limits.max_links)
        super()._add_link(link)

    def set_attributes(self, attributes: Mapping[str, AnyValue]) -> None:
        """``Span.set_attributes``, storing plain values of new keys directly."""
        bounded = self._attributes
        with self._lock:
            if self._end_time is None and isinstance(bounded, BoundedAttributes):
                with bounded._lock:  # as BoundedAttributes._set_items holds it
                    if _store_plain(bounded, attributes):
                        return
        super().set_attributes(attributes)


def _store_plain(bounded: BoundedAttributes, attributes: Mapping[str, AnyValue]) -> bool:
    """Add ``attributes`` to ``bounded`` as its ``_set_items`` would, if none needs cleaning,
    replaces a key or overflows the limit; False (and nothing added) otherwise."""
    stored = bounded._dict
    limit = bounded.max_value_len
    if bounded.maxlen is not None and len(stored) + len(attributes) > bounded.maxlen:
        return False
    for key, value in attributes.items():
        if (
            type(key) is not str or not key or key in stored or type(value) not in _PLAIN
            or (limit is not None and type(value) is str and len(value) > limit)
        ):
            return False
    stored.update(attributes)
    return True


def _attributes(limits: SpanLimits, attributes: Attributes) -> BoundedAttributes:
    """The span's mutable ``BoundedAttributes``, as ``Span.__init__`` makes it (the fields
    of ``BoundedAttributes.__init__``, whose argument checks the SDK's limits already passed)."""
    bounded = object.__new__(BoundedAttributes)
    bounded._dict = {}
    bounded.maxlen = limits.max_span_attributes
    bounded.dropped = 0
    bounded.max_value_len = limits.max_span_attribute_length
    bounded._lock = threading.Lock()
    bounded._immutable = False
    if attributes and not _store_plain(bounded, attributes):
        bounded._set_items(attributes)
    return bounded


def _starters(multi: SpanProcessor) -> tuple[SpanProcessor, ...] | None:
    """The processors of a ``SynchronousMultiSpanProcessor`` whose ``on_start`` does
    something (None for any other processor: call its ``on_start``). Kept on the multi
    processor with the tuple it came from: the SDK replaces that tuple when one is added."""
    if type(multi) is not SynchronousMultiSpanProcessor:
        return None
    processors = multi._span_processors
    cached: tuple[tuple[SpanProcessor, ...], tuple[SpanProcessor, ...]] | None
    cached = multi.__dict__.get("_otel_starters")
    if cached is None or cached[0] is not processors:
        cached = (processors, tuple(
            p for p in processors
            if type(p).on_start not in _NOOP_ON_START or "on_start" in getattr(p, "__dict__", ())))
        multi.__dict__["_otel_starters"] = cached
    return cached[1]


def start_span(
    tracer: trace.Tracer,
    name: str,
    context: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
) -> trace.Span:
    """``tracer.start_span(name, context, kind, attributes)``; a :class:`LeanSpan` when the
    tracer is the SDK's, else whatever the tracer makes."""
    if type(tracer) is not Tracer or not (_lean or _lean_sdk()):
        return tracer.start_span(name, context, kind=kind, attributes=attributes)
    current = trace.get_current_span(context).get_span_context()
    if not tracer._is_enabled():
        return trace.NonRecordingSpan(context=current)
    ids = tracer.id_generator
    parent: SpanContext | None = current
    if current is None or not current.is_valid:
        parent = None
        trace_id = ids.generate_trace_id()
        random_trace_id = ids.is_trace_id_random()
    else:
        trace_id = current.trace_id
        random_trace_id = current.trace_flags.random_trace_id
    sampler = tracer.sampler
    if sampler is DEFAULT_ON:  # ParentBased(ALWAYS_ON)'s decision, without its three calls
        decision = _SAMPLED if parent is None or parent.trace_flags.sampled else _DROP
        trace_state = None if parent is None else parent.trace_state
    else:
        result = sampler.should_sample(context, trace_id, name, kind, attributes, ())
        decision, trace_state, attributes = result.decision, result.trace_state, result.attributes
    flags = TraceFlags.SAMPLED if decision is _SAMPLED else TraceFlags.DEFAULT
    if random_trace_id:
        flags |= TraceFlags.RANDOM_TRACE_ID
    span_context = SpanContext(trace_id, ids.generate_span_id(), is_remote=False,
                               trace_flags=TraceFlags(flags), trace_state=trace_state)
    record_end_metrics = tracer._tracer_metrics.start_span(parent, decision)
    if decision is _DROP:
        return trace.NonRecordingSpan(context=span_context)
    limits = tracer._span_limits
    span = object.__new__(LeanSpan)
    # ReadableSpan.__init__'s fields, then Span.__init__'s (same names and values).
    span._name = name
    span._context = span_context
    span._kind = kind
    span._instrumentation_info = tracer.instrumentation_info
    span._instrumentation_scope = tracer._instrumentation_scope
    span._parent = parent
    span._start_time = None
    span._end_time = None
    span._resource = tracer.resource
    span._status = _UNSET
    span._sampler = tracer.sampler
    span._trace_config = None
    span._record_exception = True
    span._set_status_on_exception = True
    span._span_processor = tracer.span_processor
    span._limits = limits
    span._lock = threading.Lock()
    span._attributes = _attributes(limits, attributes)
    span._events = _NONE_YET
    span._links = _NONE_YET
    span._record_end_metrics = record_end_metrics
    span._start_time = time_ns()
    starters = _starters(tracer.span_processor)
    if starters is None:
        tracer.span_processor.on_start(span, parent_context=context)
    else:
        for processor in starters:
            processor.on_start(span, parent_context=context)
    return span


def frozen_attributes(span: ReadableSpan) -> Mapping[str, object]:
    """The attributes of an ended span, read directly when the SDK has frozen them."""
    attributes = span._attributes if _lean or _lean_sdk() else None
    if type(attributes) is BoundedAttributes and attributes._immutable:
        return attributes._dict
    return span.attributes or {}


def events_and_links(span: ReadableSpan) -> tuple[Sequence[Event], Sequence[Link]]:
    """``span.events`` and ``span.links``, skipping their copies when they are empty."""
    if not (_lean or _lean_sdk()):
        return span.events, span.links
    return (span.events if span._events else (), span.links if span._links else ())
