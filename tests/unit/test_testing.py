"""otel.testing: the capture of a service's spans, metrics and logs for its own tests."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal

import otel
import otel._setup
from otel.testing import CapturedTelemetry, MetricPoint, capture_telemetry

pytest_plugins = ["pytester"]

_REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def captured() -> Iterator[CapturedTelemetry]:
    """The context manager behind the plugin's ``otel_capture`` fixture."""
    with capture_telemetry() as capture:
        yield capture


def test_a_span_of_user_code_is_captured_with_its_attributes(captured: CapturedTelemetry) -> None:
    """A span that user code makes is captured with its attributes and the service's resource."""
    with trace.get_tracer("shop").start_as_current_span("checkout") as span:
        span.set_attribute("cart.items", 3)
    checkout = captured.span("checkout")
    assert dict(checkout.attributes or {}) == {"cart.items": 3}
    assert checkout.resource.attributes["service.name"] == "test-service"
    with pytest.raises(AssertionError, match=r"found 0; finished spans: \['checkout'\]"):
        captured.span("missing")


def test_nested_spans_keep_their_parent_and_child(captured: CapturedTelemetry) -> None:
    """A span started inside another is captured as its child, in the same trace."""
    tracer = trace.get_tracer("shop")
    with tracer.start_as_current_span("checkout"), tracer.start_as_current_span("charge"):
        pass
    assert [s.name for s in captured.spans] == ["charge", "checkout"]
    parent, child = captured.span("checkout"), captured.span("charge")
    assert parent.parent is None
    assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id


def test_counter_and_histogram_values_are_exact(captured: CapturedTelemetry) -> None:
    """Counter adds and histogram records show up in metrics() with exact totals, kept across
    collections and reset by clear()."""
    meter = metrics.get_meter("shop")
    orders = meter.create_counter("orders_total")
    latency = meter.create_histogram("checkout_seconds")
    orders.add(2, {"region": "eu"})
    latency.record(0.5)
    assert captured.metric("orders_total", {"region": "eu"}).value == 2
    orders.add(3, {"region": "eu"})
    orders.add(1, {"region": "us"})
    latency.record(2.0)
    collected = captured.metrics()
    assert sorted(collected["orders_total"], key=lambda p: p.attributes["region"]) == [
        MetricPoint(name="orders_total", kind="sum", attributes={"region": "eu"}, value=5),
        MetricPoint(name="orders_total", kind="sum", attributes={"region": "us"}, value=1),
    ]
    (histogram,) = collected["checkout_seconds"]
    assert (histogram.kind, histogram.count, histogram.value, histogram.min, histogram.max) == (
        "histogram", 2, 2.5, 0.5, 2.0)
    assert sum(histogram.bucket_counts) == 2
    assert len(histogram.bucket_counts) == len(histogram.explicit_bounds) + 1
    captured.clear()
    orders.add(7, {"region": "eu"})
    assert captured.metric("orders_total", {"region": "eu"}).value == 7
    assert "checkout_seconds" not in captured.metrics()


def test_a_warning_is_captured_with_the_current_trace_id_and_its_extra_field(
    captured: CapturedTelemetry,
) -> None:
    """logging.warning with extra= inside a span is captured as a log record carrying that
    span's trace id and the extra field (and the same in the JSON line)."""
    with trace.get_tracer("shop").start_as_current_span("checkout") as span:
        logging.warning("slow payment", extra={"order_id": "o-1"})
    (record,) = [r.log_record for r in captured.logs if r.log_record.body == "slow payment"]
    context = span.get_span_context()
    assert (record.trace_id, record.span_id) == (context.trace_id, context.span_id)
    assert record.severity_text == "WARN"
    assert (record.attributes or {})["order_id"] == "o-1"
    (line,) = [x for x in captured.json_lines() if x["message"] == "slow payment"]
    assert (line["trace_id"], line["order_id"]) == (f"{context.trace_id:032x}", "o-1")


def test_a_secret_is_captured_redacted(captured: CapturedTelemetry) -> None:
    """Secrets in span attributes and log extras are captured redacted, as they are exported."""
    with trace.get_tracer("shop").start_as_current_span("login") as span:
        span.set_attribute("api_key", "k-123")
        span.set_attribute("http.request.header.authorization", ("Bearer abcdef",))
        span.set_attribute("url.query", "access_token=s3cret&page=2")
        logging.getLogger("shop").warning("login", extra={"password": "hunter2"})
    assert dict(captured.span("login").attributes or {}) == {
        "api_key": otel.REDACTED,
        "http.request.header.authorization": otel.REDACTED,
        "url.query": f"access_token={otel.REDACTED}&page=2",
    }
    (record,) = [r.log_record for r in captured.logs if r.log_record.body == "login"]
    assert (record.attributes or {})["password"] == otel.REDACTED
    assert captured.metric(
        "soma_scrubbed_values_total", {"signal": "traces", "rule": "api_key"}).value == 1


def test_consecutive_captures_do_not_see_each_others_data() -> None:
    """Two captures in a row each see only their own spans, metrics and logs, and the process's
    OpenTelemetry and otel.configure() state is back as it was after each."""
    provider_before = trace.get_tracer_provider()
    meter_provider_before = metrics.get_meter_provider()
    root_before = list(logging.getLogger().handlers)
    module_meter = metrics_internal._PROXY_METER_PROVIDER.get_meter("module-level")
    module_counter = module_meter.create_counter("module_events_total")
    with capture_telemetry() as first:
        trace.get_tracer("t").start_span("one").end()
        metrics.get_meter("t").create_counter("events_total").add(1)
        module_counter.add(1)
        logging.warning("first")
        assert first.metric("events_total").value == 1
        assert first.metric("module_events_total").value == 1
    with capture_telemetry("other-service") as second:
        trace.get_tracer("t").start_span("two").end()
        module_counter.add(4)
        logging.warning("second")
        assert "events_total" not in second.metrics()
        assert second.metric("module_events_total").value == 4
        assert second.span("two").resource.attributes["service.name"] == "other-service"
    assert [s.name for s in first.spans] == ["one"]
    assert [s.name for s in second.spans] == ["two"]
    assert [r.log_record.body for r in first.logs] == ["first"]
    assert [r.log_record.body for r in second.logs] == ["second"]
    assert trace.get_tracer_provider() is provider_before
    assert metrics.get_meter_provider() is meter_provider_before
    assert logging.getLogger().handlers == root_before
    assert otel._setup._active is None and otel._setup._owned_providers == []


def test_a_capture_sets_aside_an_earlier_configure_and_puts_it_back(
    fresh_otel: None,
) -> None:
    """A service that already called otel.configure() in the test process can still capture;
    its Telemetry, providers and handlers are in force again afterwards."""
    telemetry = otel.configure(
        service_name="svc", traces_exporter="none", metrics_exporter="none",
        logs_exporter="none", instrumentations=(), json_logs=False)
    with capture_telemetry() as capture:
        trace.get_tracer("t").start_span("inside").end()
        assert telemetry._handlers[0] not in logging.getLogger().handlers
    assert [s.name for s in capture.spans] == ["inside"]
    assert otel._setup._active is telemetry
    assert trace.get_tracer_provider() is telemetry.tracer_provider
    assert telemetry._handlers[0] in logging.getLogger().handlers


def test_a_users_test_file_gets_the_otel_capture_fixture(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's test file run with -p otel.testing gets otel_capture, fresh in each test and
    scrubbed."""
    pytester.makepyfile(
        """
        import logging

        from opentelemetry import trace

        def test_first(otel_capture):
            with trace.get_tracer("app").start_as_current_span("work") as span:
                span.set_attribute("api_key", "k-1")
                logging.getLogger("app").info("done")
            assert otel_capture.span("work").attributes["api_key"] == "[REDACTED]"
            assert [r.log_record.body for r in otel_capture.logs] == ["done"]

        def test_second_starts_empty(otel_capture):
            assert otel_capture.spans == [] and otel_capture.logs == []
            trace.get_tracer("app").start_span("again").end()
            assert [s.name for s in otel_capture.spans] == ["again"]
        """
    )
    pythonpath = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", pythonpath)
    # Only the plugin named here: the test must not depend on what else is installed.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "otel.testing", "-p", "no:cacheprovider",
                                           timeout=120)
    result.assert_outcomes(passed=2)
