"""Scrubbing rules, and span attributes redacted before any exporter sees them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel._scrubbing import (
    REDACTED,
    Redactions,
    ScrubbingSpanProcessor,
    key_rule,
    scrub_text,
    scrub_value,
)


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("Authorization", "authorization"),
        ("http.request.header.authorization", "authorization"),
        ("Proxy-Authorization", "authorization"),
        ("Cookie", "cookie"),
        ("set-cookie", "cookie"),
        ("X-Api-Key", "api_key"),
        ("apikey", "api_key"),
        ("OPENAI_API_KEY", "api_key"),
        ("password", "password"),
        ("db_passwd", "password"),
        ("client_secret", "secret"),
        ("access_token", "token"),
        ("X-Auth-Token", "token"),
        ("token", "token"),
        ("session-id", "session_id"),
        ("sessionId", "session_id"),
        ("private_key", "private_key"),
        ("aws_credentials", "credential"),
    ],
)
def test_secret_keys_match_their_rule(key: str, rule: str) -> None:
    """Each secret-bearing key matches the named rule, case-insensitively."""
    assert key_rule(key) == rule


@pytest.mark.parametrize(
    "key",
    ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "max_tokens", "tokenizer",
     "tenant", "persona_id", "conversation_id", "http.route", "model"],
)
def test_ordinary_keys_are_not_secrets(key: str) -> None:
    """Token counts and ordinary identifiers match no rule."""
    assert key_rule(key) is None


def test_nested_mappings_and_lists_are_redacted_at_any_depth() -> None:
    """Secret keys inside nested dicts and lists are redacted; other values are untouched."""
    redactions = Redactions()
    value = {"user": "ann", "headers": {"Authorization": "Bearer abc.def", "Accept": "json"},
             "items": [{"password": "hunter2"}, ("x", {"api_key": 1})]}
    assert scrub_value(value, redactions) == {
        "user": "ann",
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "items": [{"password": REDACTED}, ("x", {"api_key": REDACTED})],
    }
    assert redactions.counts == {"authorization": 1, "password": 1, "api_key": 1}


def test_free_text_loses_credentials_but_keeps_the_rest() -> None:
    """Auth schemes and secret key=value pairs in text are redacted, other pairs kept."""
    redactions = Redactions()
    text = "GET /x?user=ann&token=s3cr3t&page=2 Authorization: Bearer eyJhbGciOi.xyz password: p"
    assert scrub_text(text, redactions) == (
        f"GET /x?user=ann&token={REDACTED}&page=2 Authorization: Bearer {REDACTED} "
        f"password: {REDACTED}"
    )
    assert redactions.counts == {"token": 1, "authorization": 1, "password": 1}


def test_a_pair_right_after_an_ordinary_key_and_colon_is_still_redacted() -> None:
    """``error: password=x`` loses the password: an ordinary ``key:`` never swallows the secret
    pair after it as its own value (it did before the rules were shared with the collector)."""
    redactions = Redactions()
    text = "error: password=hunter2, see: token=abc"
    assert scrub_text(text, redactions) == f"error: password={REDACTED}, see: token={REDACTED}"
    assert redactions.counts == {"password": 1, "token": 1}


def test_already_redacted_values_are_not_counted_again() -> None:
    """A second pass over scrubbed data changes nothing and counts nothing."""
    first = Redactions()
    once = scrub_value({"password": "x", "msg": "token=abc"}, first)
    second = Redactions()
    assert scrub_value(once, second) == once
    assert (first.counts, second.counts) == ({"password": 1, "token": 1}, {})


@pytest.fixture
def meter_reader(fresh_otel: None) -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    yield reader
    provider.shutdown()


def _scrub_counts(reader: InMemoryMetricReader) -> dict[tuple[str, str], int | float]:
    data = reader.get_metrics_data()
    counts: dict[tuple[str, str], int | float] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "soma_scrubbed_values_total":
                    for point in metric.data.data_points:
                        attrs = dict(point.attributes or {})
                        counts[(str(attrs["signal"]), str(attrs["rule"]))] = point.value  # type: ignore[union-attr]
    return counts


@pytest.mark.parametrize("exporting_processor", ["simple", "batch"])
def test_span_attributes_are_redacted_before_an_earlier_exporting_processor(
    meter_reader: InMemoryMetricReader, exporting_processor: str
) -> None:
    """With the exporting processor registered first (as under opentelemetry-instrument), the
    exported span already has redacted attributes and events, and the redactions are counted."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    processor = (
        SimpleSpanProcessor(exporter)
        if exporting_processor == "simple"
        else BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000)
    )
    provider.add_span_processor(processor)
    provider.add_span_processor(ScrubbingSpanProcessor())
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("req", attributes={"http.request.header.authorization":
                                                         ("Bearer abc",)}) as span:
        span.set_attribute("url.full", "http://gw/ws?session_id=42&lang=en")
        span.set_attribute("gen_ai.usage.input_tokens", 7)
        span.add_event("login", {"password": "hunter2", "user": "ann"})
    provider.force_flush()
    (finished,) = exporter.get_finished_spans()
    assert dict(finished.attributes or {}) == {
        "http.request.header.authorization": REDACTED,
        "url.full": f"http://gw/ws?session_id={REDACTED}&lang=en",
        "gen_ai.usage.input_tokens": 7,
    }
    assert dict(finished.events[0].attributes or {}) == {"password": REDACTED, "user": "ann"}
    assert _scrub_counts(meter_reader) == {
        ("traces", "authorization"): 1, ("traces", "session_id"): 1, ("traces", "password"): 1,
    }
    provider.shutdown()


def test_span_without_secrets_keeps_its_attribute_limits(
    meter_reader: InMemoryMetricReader,
) -> None:
    """A clean span is exported unchanged, with its dropped-attribute count intact."""
    from opentelemetry.sdk.trace import SpanLimits

    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(ScrubbingSpanProcessor())
    with provider.get_tracer("t").start_as_current_span("s") as span:
        span.set_attributes({"a": 1, "b": 2, "c": 3})
    (finished,) = exporter.get_finished_spans()
    assert (dict(finished.attributes or {}), finished.dropped_attributes) == ({"b": 2, "c": 3}, 1)
    assert _scrub_counts(meter_reader) == {}
    provider.shutdown()
    assert trace.get_current_span().get_span_context().is_valid is False


def test_repeated_clean_pairs_do_not_hide_a_later_secret(
    meter_reader: InMemoryMetricReader,
) -> None:
    """Spans whose pairs were all found clean before stay as they are; a new secret beside
    those same pairs, or an equal value under a secret key, is still redacted and counted."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(ScrubbingSpanProcessor())
    tracer = provider.get_tracer("t")
    clean = {"url.path": "/v1/ping", "http.response.status_code": 200, "flag": True}
    for attributes in (clean, clean, {**clean, "url.query": "token=abc"}, clean,
                       {"password": True, "flag": 1}):
        tracer.start_span("s", attributes=attributes).end()
    exported = [dict(span.attributes or {}) for span in exporter.get_finished_spans()]
    assert exported == [clean, clean, {**clean, "url.query": f"token={REDACTED}"}, clean,
                        {"password": REDACTED, "flag": 1}]
    assert _scrub_counts(meter_reader) == {("traces", "token"): 1, ("traces", "password"): 1}
    provider.shutdown()
