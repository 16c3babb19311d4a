"""The distro's three entry points (otel._distro): defaults, resource, post-instrument setup."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest
from opentelemetry import _logs, metrics, trace
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel
from otel import _distro, _setup


class EndedNames(SpanProcessor):
    """Records the names of the spans that end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def on_end(self, span: ReadableSpan) -> None:
        """Remember the span's name."""
        self.names.append(span.name)


@pytest.fixture
def sdk(fresh_otel: None) -> Iterator[InMemorySpanExporter]:
    """The SDK providers as the configurator installs them (in-memory span export first)."""
    resource = Resource.create({"service.name": "router", "service.version": "1.0.0",
                                "service.instance.id": "r-1", "deployment.environment": "LOCAL"})
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource))
    _logs.set_logger_provider(LoggerProvider(resource=resource))
    LoggingInstrumentor().instrument()
    yield spans
    LoggingInstrumentor().uninstrument()


def test_the_distro_sets_each_default_only_where_the_user_set_nothing(fresh_otel: None) -> None:
    """Variables already set keep their values; the others get the distro's defaults."""
    for var in _distro.DEFAULTS:
        os.environ.pop(var, None)
    os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = "5000"
    _distro.SomaDistro().configure()
    assert {var: os.environ[var] for var in _distro.DEFAULTS} == {
        **_distro.DEFAULTS, "OTEL_METRIC_EXPORT_INTERVAL": "5000"}


def test_the_resource_gets_an_instance_id_and_environment_only_where_missing() -> None:
    """service.instance.id (a uuid4) and deployment.environment are added unless given."""
    added = _distro.default_resource({"SOMA_AGENT_MODE": "PROD"})
    assert set(added) == {"service.instance.id", "deployment.environment"}
    assert len(added["service.instance.id"]) == 36 and added["deployment.environment"] == "PROD"
    assert _distro.default_resource(
        {"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=r-7,deployment.environment=DEV"}) == {}


def test_malformed_resource_attributes_are_reported_and_the_defaults_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken OTEL_RESOURCE_ATTRIBUTES is logged with its variable and never stops start-up."""
    with caplog.at_level(logging.ERROR, logger="otel"):
        added = _distro.default_resource({"OTEL_RESOURCE_ATTRIBUTES": "no-equals-sign"})
    assert set(added) == {"service.instance.id", "deployment.environment"}
    assert "OTEL_RESOURCE_ATTRIBUTES" in caplog.text


def test_post_instrument_does_nothing_when_another_distro_was_chosen(
    sdk: InMemorySpanExporter,
) -> None:
    """Without this package's distro chosen, the post-instrument step leaves the SDK alone."""
    _distro.post_instrument()
    assert _setup._active is None


def test_post_instrument_sets_up_scrubbing_and_configure_then_returns_the_same_setup(
    sdk: InMemorySpanExporter,
) -> None:
    """After the distro's setup a service's configure() returns it and adds its processors."""
    _distro.SomaDistro().configure()
    _distro.post_instrument()
    telemetry = _setup._active
    assert telemetry is not None and telemetry.by_distro
    ended = EndedNames()
    assert otel.configure(service_name="ignored", log_stream=io.StringIO(),
                          additional_span_processors=[ended]) is telemetry
    with trace.get_tracer("t").start_as_current_span("call") as span:
        span.set_attribute("url.query", "access_token=s3cret&page=2")
    (finished,) = sdk.get_finished_spans()
    assert dict(finished.attributes or {}) == {"url.query": "access_token=[REDACTED]&page=2"}
    assert ended.names == ["call"]
    assert telemetry.settings.service_name == "router"


def test_post_instrument_logs_a_failed_setup_and_never_raises(
    fresh_otel: None, caplog: pytest.LogCaptureFixture,
) -> None:
    """With a tracer provider but no SDK meter provider the setup fails: logged, not raised."""
    trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": "x"})))
    _distro.SomaDistro().configure()
    with caplog.at_level(logging.ERROR, logger="otel"):
        _distro.post_instrument()
    assert _setup._active is None
    assert "runs with the plain OpenTelemetry SDK" in caplog.text


@pytest.mark.parametrize(("setting", "lean"), [("true", True), ("false", False)])
def test_soma_lean_instrumentation_chooses_between_the_lean_and_the_contrib_fastapi(
    sdk: InMemorySpanExporter, setting: str, lean: bool,
) -> None:
    """With the setting true the distro replaces the contrib's FastAPI instrumentation by the
    lean one; with false it keeps the contrib's."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    from otel import _fastapi

    os.environ["SOMA_LEAN_INSTRUMENTATION"] = setting
    contrib = FastAPIInstrumentor()
    contrib.instrument()
    try:
        _distro.SomaDistro().configure()
        _distro.post_instrument()
        assert (_fastapi.is_instrumented(), contrib.is_instrumented_by_opentelemetry) == (
            lean, not lean)
    finally:
        _fastapi.uninstrument()
        if contrib.is_instrumented_by_opentelemetry:
            contrib.uninstrument()
