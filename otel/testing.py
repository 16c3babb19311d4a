"""Capture the spans, metrics and log records a service makes, in its tests (a pytest plugin).

Usage (pytest)::

    def test_checkout_is_traced(otel_capture):
        checkout(cart)                                   # the service's own code
        span = otel_capture.span("checkout")             # the one finished span of that name
        assert span.attributes["cart.items"] == 3
        assert otel_capture.metric("orders_total").value == 1
        (record,) = [r for r in otel_capture.logs if r.log_record.body == "order placed"]
        assert record.log_record.trace_id == span.context.trace_id

The fixture ``otel_capture`` comes with the package: it registers this module as the pytest
plugin ``somaagent_otel`` (entry point ``pytest11``). Without the installed package, enable it
with ``pytest -p otel.testing`` or ``pytest_plugins = ["otel.testing"]`` in the root
``conftest.py`` (not both ways at once: pytest refuses one module under two plugin names).
Outside pytest, or for other settings, use the context manager::

    with otel.testing.capture_telemetry("gateway", instrumentations=["fastapi"]) as captured:
        ...

Only this module imports pytest; ``import otel`` does not.

How it is set up
    :func:`capture_telemetry` calls :func:`otel.configure` in standalone mode, as a service
    gets it, with the network exporters off (``traces_exporter``, ``metrics_exporter`` and
    ``logs_exporter`` ``"none"``) and the SDK's in-memory ones added through
    ``additional_span_processors`` (a ``SimpleSpanProcessor`` on an ``InMemorySpanExporter``),
    ``additional_metric_readers`` (an ``InMemoryMetricReader``) and
    ``additional_log_processors`` (a ``SimpleLogRecordProcessor`` on an
    ``InMemoryLogRecordExporter``). Everything else is the library's: the resource
    (``service.name`` is the ``service_name`` argument), the parent-based always-on sampler, the
    :class:`~otel.ScrubbingSpanProcessor`, the OTLP logging handler and the JSON log handler,
    both behind the :class:`~otel.ScrubbingFilter`, and the root log level (``log_level``, else
    ``SOMA_LOG_LEVEL``; DEBUG records are not captured at the default INFO). The JSON lines go to
    a buffer, :meth:`CapturedTelemetry.json_lines`, not to stdout. Other ``OTEL_*``/``SOMA_*``
    variables apply as in a service (a bad value raises :class:`~otel.ConfigurationError`).
    No library is instrumented unless named in ``instrumentations`` (``"fastapi"``, ``"httpx"``,
    ``"redis"``, ``"asyncpg"``, ``"aiokafka"``); the capture removes them again at the end.

What is captured
    * :attr:`CapturedTelemetry.spans`: every finished span (SDK ``ReadableSpan``), in the order
      they ended; :meth:`~CapturedTelemetry.span` returns the one with a name and fails, listing
      the names seen, if there are none or several.
    * :meth:`CapturedTelemetry.metrics`: collects now and returns ``{metric name: [MetricPoint,
      ...]}``, one :class:`MetricPoint` per attribute set: ``value`` is a counter's or
      up-down counter's total, a gauge's last value, a histogram's sum (with ``count``,
      ``min``, ``max``, ``bucket_counts``, ``explicit_bounds``). Totals count from the start of
      the capture (or the last :meth:`~CapturedTelemetry.clear`). The library's own series
      (``soma_heartbeat``, ``soma_scrubbed_values_total``, ...) are there too.
      :meth:`~CapturedTelemetry.metric` returns the one point of a name and attribute set.
    * :attr:`CapturedTelemetry.logs`: every log record that reached the OTLP logging handler
      (SDK ``ReadableLogRecord``: ``.log_record.body``, ``.attributes`` with the ``extra=``
      fields, ``.trace_id``/``.span_id`` of the span current when it was logged).
    * :meth:`CapturedTelemetry.clear` forgets all three (and the JSON lines) so far.

How scrubbing applies
    Exactly as on export: spans pass the library's :class:`~otel.ScrubbingSpanProcessor` before
    the in-memory exporter sees them, and log records the :class:`~otel.ScrubbingFilter`, so a
    secret (``api_key``, an ``Authorization`` header, ``token=...`` in a string; the rules are in
    :mod:`otel._scrubbing`) is captured as ``"[REDACTED]"``. A test can therefore assert that its
    service leaks nothing: ``assert span.attributes["http.request.header.authorization"] ==
    otel.REDACTED``.

Process state (for tests only)
    OpenTelemetry lets a process set its global providers once, and :func:`otel.configure`
    refuses a second standalone setup. So that every test can capture, the capture saves the
    API's global provider state and ``otel._setup``'s, puts them back to "never set", configures,
    and at the end shuts its providers down and restores everything it saved: the globals, an
    earlier ``otel.configure()`` of the process (its handlers are off the root logger during the
    capture), the root logger's handlers and level, and ``OTEL_SEMCONV_STABILITY_OPT_IN``. This
    writes private attributes of ``opentelemetry-api`` (as ``opentelemetry-test-utils`` does);
    never use it in a running service. One capture at a time per process (pytest-xdist workers
    are separate processes). Code that obtains tracers or meters while the capture runs, or
    calls ``trace.get_tracer()`` where it makes spans, is always captured; so are instruments of
    a module-level ``metrics.get_meter()`` called before any provider was set (the API's proxy
    meters are rebound to each capture's provider). A module-level ``trace.get_tracer()`` proxy
    binds to the first provider it is used with and keeps it, so spans it makes in a later
    capture are lost: get tracers at call time, or from a provider that stays installed.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from opentelemetry import trace
from opentelemetry._logs import _internal as logs_internal
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import _Gauge as SyncGauge
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

import otel._instruments
import otel._setup
from otel._setup import Telemetry, configure

__all__ = ["CapturedTelemetry", "MetricPoint", "capture_telemetry", "otel_capture"]

_SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"

#: The reader reports changes since its last collection; CapturedTelemetry adds them up, so that
#: clear() can start the totals afresh (cumulative SDK streams cannot be reset).
_DELTA: dict[type, AggregationTemporality] = {
    kind: AggregationTemporality.DELTA
    for kind in (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter,
                 ObservableGauge, SyncGauge)
}


@dataclass(frozen=True)
class MetricPoint:
    """One metric stream (a name and an attribute set) as captured so far.

    ``value``: a counter's or up-down counter's total, a gauge's last value, a histogram's sum.
    The histogram fields are ``0``/``None``/``()`` for the other kinds.
    """

    name: str
    kind: Literal["sum", "gauge", "histogram"]
    attributes: Mapping[str, Any]
    value: int | float
    count: int = 0
    min: int | float | None = None
    max: int | float | None = None
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()


def _key(attributes: Mapping[str, Any] | None) -> frozenset[tuple[str, Any]]:
    return frozenset(
        (k, tuple(v) if isinstance(v, list | tuple) else v) for k, v in (attributes or {}).items()
    )


def _merge_histogram(old: MetricPoint | None, new: MetricPoint) -> MetricPoint:
    if old is None or old.explicit_bounds != new.explicit_bounds:
        return new
    lows = [v for v in (old.min, new.min) if v is not None]
    highs = [v for v in (old.max, new.max) if v is not None]
    return MetricPoint(
        name=new.name,
        kind="histogram",
        attributes=new.attributes,
        value=old.value + new.value,
        count=old.count + new.count,
        min=min(lows) if lows else None,
        max=max(highs) if highs else None,
        bucket_counts=tuple(a + b for a, b in zip(old.bucket_counts, new.bucket_counts,
                                                  strict=True)),
        explicit_bounds=new.explicit_bounds,
    )


@dataclass
class CapturedTelemetry:
    """What the service's code made during a capture (see the module docstring)."""

    telemetry: Telemetry
    span_exporter: InMemorySpanExporter
    metric_reader: InMemoryMetricReader
    log_exporter: InMemoryLogRecordExporter
    json_stream: io.StringIO
    _points: dict[tuple[str, frozenset[tuple[str, Any]]], MetricPoint] = field(
        default_factory=dict, repr=False)

    @property
    def spans(self) -> list[ReadableSpan]:
        """Every finished span so far, in the order they ended."""
        return list(self.span_exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one finished span named ``name``; AssertionError if there is none or several."""
        spans = self.spans
        found = [s for s in spans if s.name == name]
        if len(found) != 1:
            raise AssertionError(
                f"expected exactly one finished span named {name!r}, found {len(found)}; "
                f"finished spans: {[s.name for s in spans]}"
            )
        return found[0]

    @property
    def logs(self) -> list[ReadableLogRecord]:
        """Every log record that reached the OTLP logging handler so far."""
        return list(self.log_exporter.get_finished_logs())

    def json_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines the service would have printed on stdout, parsed."""
        return [json.loads(line) for line in self.json_stream.getvalue().splitlines() if line]

    def _collect(self) -> None:
        data = self.metric_reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    self._add(metric.name, metric.data)

    def _add(self, name: str, data: object) -> None:
        if isinstance(data, Sum | Gauge):
            kind: Literal["sum", "gauge"] = "sum" if isinstance(data, Sum) else "gauge"
            number_points: Sequence[NumberDataPoint] = data.data_points
            for point in number_points:
                key = (name, _key(point.attributes))
                old = self._points.get(key)
                value = point.value + old.value if kind == "sum" and old else point.value
                self._points[key] = MetricPoint(
                    name=name, kind=kind, attributes=dict(point.attributes or {}), value=value)
        elif isinstance(data, HistogramData):
            histogram_points: Sequence[HistogramDataPoint] = data.data_points
            for hpoint in histogram_points:
                key = (name, _key(hpoint.attributes))
                self._points[key] = _merge_histogram(self._points.get(key), MetricPoint(
                    name=name,
                    kind="histogram",
                    attributes=dict(hpoint.attributes or {}),
                    value=hpoint.sum,
                    count=hpoint.count,
                    min=hpoint.min if hpoint.count else None,
                    max=hpoint.max if hpoint.count else None,
                    bucket_counts=tuple(hpoint.bucket_counts),
                    explicit_bounds=tuple(hpoint.explicit_bounds),
                ))
        # Exponential histograms need a View, which configure() does not install.

    def metrics(self) -> dict[str, list[MetricPoint]]:
        """Collect now; ``{metric name: [one MetricPoint per attribute set]}``."""
        self._collect()
        result: dict[str, list[MetricPoint]] = {}
        for (name, _), point in self._points.items():
            result.setdefault(name, []).append(point)
        return result

    def metric(self, name: str, attributes: Mapping[str, Any] | None = None) -> MetricPoint:
        """Collect now; the point of ``name`` with exactly ``attributes`` (if not given: the
        metric's only point). AssertionError if there is no such point, or several."""
        points = self.metrics().get(name, [])
        found = (points if attributes is None
                 else [p for p in points if _key(p.attributes) == _key(attributes)])
        if len(found) != 1:
            known = [dict(p.attributes) for p in points]
            raise AssertionError(
                f"expected exactly one point of metric {name!r}"
                + ("" if attributes is None else f" with attributes {dict(attributes)}")
                + f", found {len(found)}; its points have attributes {known}"
                + ("" if points else f"; metrics seen: {sorted(self.metrics())}")
            )
        return found[0]

    def clear(self) -> None:
        """Forget the spans, metric totals, log records and JSON lines captured so far."""
        self.span_exporter.clear()
        self.log_exporter.clear()
        self.metric_reader.get_metrics_data()  # the next collection reports only what follows
        self._points.clear()
        self.json_stream.seek(0)
        self.json_stream.truncate()


@dataclass
class _SavedState:
    """The process-wide state a capture replaces, to put back afterwards."""

    api: dict[tuple[Any, str], Any]
    instruments_cache: Any
    active: Telemetry | None
    owned: list[object]
    root_handlers: list[logging.Handler]
    root_level: int
    semconv: str | None
    proxy_meters: list[tuple[Any, str, Any]]


#: (module, attribute) of the API's once-only global provider state. The proxy providers are
#: kept, so that proxy meters made before any provider was set are rebound to each capture's.
_API_GLOBALS: tuple[tuple[Any, str, Any], ...] = (
    (trace, "_TRACER_PROVIDER_SET_ONCE", Once),
    (trace, "_TRACER_PROVIDER", None),
    (metrics_internal, "_METER_PROVIDER_SET_ONCE", Once),
    (metrics_internal, "_METER_PROVIDER", None),
    (logs_internal, "_LOGGER_PROVIDER_SET_ONCE", Once),
    (logs_internal, "_LOGGER_PROVIDER", None),
)


def _proxy_meter_bindings() -> list[tuple[Any, str, Any]]:
    """(object, attribute, value) of what the API's proxy meter provider, its proxy meters and
    their instruments are bound to; a capture rebinds them to its provider."""
    proxy = metrics_internal._PROXY_METER_PROVIDER
    bindings: list[tuple[Any, str, Any]] = [
        (proxy, "_real_meter_provider", proxy._real_meter_provider)]
    for meter in proxy._meters:
        bindings.append((meter, "_real_meter", meter._real_meter))
        bindings.extend((i, "_real_instrument", i._real_instrument) for i in meter._instruments)
    return bindings


def _save_and_reset() -> _SavedState:
    """Save the global state and put it back to that of a process where nothing was set up."""
    root = logging.getLogger()
    saved = _SavedState(
        api={(module, name): getattr(module, name) for module, name, _ in _API_GLOBALS},
        instruments_cache=otel._instruments._cached,
        active=otel._setup._active,
        owned=list(otel._setup._owned_providers),
        root_handlers=list(root.handlers),
        root_level=root.level,
        semconv=os.environ.get(_SEMCONV_OPT_IN),
        proxy_meters=_proxy_meter_bindings(),
    )
    for module, name, fresh in _API_GLOBALS:
        setattr(module, name, fresh() if fresh is not None else None)
    otel._instruments._cached = None
    # configure() refuses to run while another Telemetry is active, and after a standalone setup
    # of this process (the API could not take new providers). Both are true in a test process
    # once a capture or the service itself has configured; the API state was just reset, so
    # configure() may install providers again, and the saved values come back at the end.
    otel._setup._active = None
    otel._setup._owned_providers.clear()
    if saved.active is not None:  # an earlier configure(): its handlers would see our records
        for handler in saved.active._handlers:
            root.removeHandler(handler)
    return saved


def _restore(saved: _SavedState) -> None:
    for (module, name), value in saved.api.items():
        setattr(module, name, value)
    # Proxy meters made during the capture stay unbound (None), to be bound by the next provider.
    for obj, attribute, _ in _proxy_meter_bindings():
        setattr(obj, attribute, None)
    for obj, attribute, value in saved.proxy_meters:
        setattr(obj, attribute, value)
    otel._instruments._cached = saved.instruments_cache
    otel._setup._active = saved.active
    otel._setup._owned_providers[:] = saved.owned
    root = logging.getLogger()
    root.handlers[:] = saved.root_handlers
    root.setLevel(saved.root_level)
    if saved.semconv is None:
        os.environ.pop(_SEMCONV_OPT_IN, None)
    else:
        os.environ[_SEMCONV_OPT_IN] = saved.semconv


@contextmanager
def capture_telemetry(
    service_name: str = "test-service",
    *,
    instrumentations: Collection[str] = (),
    log_level: str | None = None,
) -> Iterator[CapturedTelemetry]:
    """Set the library up as a service gets it, exporting to memory, for the ``with`` block.

    ``instrumentations`` names the libraries to instrument (default none); ``log_level`` the
    root log level (default ``SOMA_LOG_LEVEL``, else INFO). Restores the process's
    OpenTelemetry and logging state on exit; for tests only (see the module docstring).
    """
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader(preferred_temporality=_DELTA)
    logs = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    stream = io.StringIO()
    saved = _save_and_reset()
    telemetry: Telemetry | None = None
    try:
        telemetry = configure(
            service_name=service_name,
            traces_exporter="none",
            metrics_exporter="none",
            logs_exporter="none",
            log_level=log_level,
            log_stream=stream,
            instrumentations=instrumentations,
            additional_span_processors=[SimpleSpanProcessor(spans)],
            additional_metric_readers=[reader],
            additional_log_processors=[SimpleLogRecordProcessor(logs)],
        )
        yield CapturedTelemetry(
            telemetry=telemetry,
            span_exporter=spans,
            metric_reader=reader,
            log_exporter=logs,
            json_stream=stream,
        )
    finally:
        try:
            if telemetry is not None:
                telemetry.shutdown()
        finally:
            _restore(saved)


@pytest.fixture
def otel_capture() -> Iterator[CapturedTelemetry]:
    """The spans, metrics and logs this test's code makes, through the library's set-up
    (service name ``test-service``; see :mod:`otel.testing`)."""
    with capture_telemetry() as captured:
        yield captured
