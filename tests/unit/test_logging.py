"""JSON log lines and OTLP log records: fields, trace context, extras, robustness, scrubbing."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

from otel._logging import JsonFormatter, OtlpLoggingHandler, ScrubbingFilter
from otel._scrubbing import REDACTED


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("gateway"))
    handler.addFilter(ScrubbingFilter())
    logger = logging.getLogger("tests.unit.json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers.clear()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_line_has_the_records_own_fields(json_logger: tuple[logging.Logger, io.StringIO]) -> None:
    """One line holds timestamp from record.created (RFC 3339 UTC ms), level, logger, message,
    module, function, line and service.name, and nothing else outside a span."""
    logger, stream = json_logger
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 7, "disk %d%%", (93,),
                               None, func="check")
    record.created = 1_700_000_000.123456
    logger.handle(record)
    assert _lines(stream) == [{
        "timestamp": "2023-11-14T22:13:20.123Z",
        "level": "WARNING",
        "logger": "tests.unit.json",
        "message": "disk 93%",
        "module": "test_logging",
        "function": "check",
        "line": 7,
        "service.name": "gateway",
    }]


def test_trace_and_span_ids_appear_only_inside_a_valid_span(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """Inside a span the line carries its W3C lowercase-hex trace_id and span_id; outside none."""
    logger, stream = json_logger
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("s") as span:
        logger.info("inside")
        ctx = span.get_span_context()
    logger.info("outside")
    inside, outside = _lines(stream)
    assert (inside["trace_id"], inside["span_id"]) == (
        f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}",
    )
    assert "trace_id" not in outside and "span_id" not in outside


def test_extra_fields_are_top_level_keys_and_collisions_are_prefixed(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """Every extra= field is a top-level key; one named like a fixed key becomes extra.<name>."""
    logger, stream = json_logger
    logger.info("hi", extra={"tenant": "acme", "attempt": 2, "nested": {"a": [1, 2]},
                             "level": "custom", "service.name": "other"})
    (line,) = _lines(stream)
    assert line["tenant"] == "acme" and line["attempt"] == 2 and line["nested"] == {"a": [1, 2]}
    assert (line["level"], line["extra.level"]) == ("INFO", "custom")
    assert (line["service.name"], line["extra.service.name"]) == ("gateway", "other")


def test_values_json_cannot_hold_fall_back_without_breaking_the_line(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """Objects become repr, NaN/inf strings, a broken repr a placeholder, cycles stop."""

    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    logger, stream = json_logger
    logger.info("odd", extra={"obj": {1, 2}, "nan": float("nan"), "inf": float("-inf"),
                              "bad": BadRepr(), "cyclic": cyclic, "key": {(1, 2): "t"}})
    (line,) = _lines(stream)
    assert (line["obj"], line["nan"], line["inf"]) == ("{1, 2}", "nan", "-inf")
    assert line["bad"] == f"<unrepresentable {BadRepr.__qualname__}>"
    assert line["key"] == {"(1, 2)": "t"}
    depth, node = 0, line["cyclic"]
    while isinstance(node, dict):
        node, depth = node["self"], depth + 1
    # the line is level 1, so the cycle is cut after 16 levels in all
    assert depth == 15 and isinstance(node, str) and node.startswith("{'self': {'self'")


def test_mismatched_format_arguments_still_produce_a_line(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """A message whose % arguments do not fit is logged with both parts shown."""
    logger, stream = json_logger
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "%d items", ("many",), None)
    # straight to our handler: pytest's capture handler would re-raise the format error
    (handler,) = [h for h in logger.handlers if isinstance(h.formatter, JsonFormatter)]
    handler.handle(record)
    (line,) = _lines(stream)
    assert line["message"] == "'%d items' (arguments could not be formatted: ('many',))"


def test_control_characters_are_escaped_and_no_raw_newline_is_written(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """Newlines, carriage returns, escapes and line separators survive as escapes on one line."""
    logger, stream = json_logger
    message = "a\nb\rc\x1b[31md\u2028e\x85f\x00"
    logger.info(message, extra={"field": "x\ny"})
    raw = stream.getvalue()
    assert raw.count("\n") == 1 and raw.endswith("\n")
    assert not any(ch in raw[:-1] for ch in "\r\x1b\u2028\x85\x00")
    (line,) = _lines(stream)
    assert (line["message"], line["field"]) == (message, "x\ny")


def test_exception_and_stack_are_included(json_logger: tuple[logging.Logger, io.StringIO]) -> None:
    """logger.exception() adds the traceback under exception; stack_info under stack."""
    logger, stream = json_logger
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed", stack_info=True)
    (line,) = _lines(stream)
    exception, stack = str(line["exception"]), str(line["stack"])
    assert exception.startswith("Traceback (most recent call last):")
    assert exception.endswith("ValueError: boom")
    assert stack.startswith("Stack (most recent call last):")
    assert (line["level"], line["message"]) == ("ERROR", "failed")


def test_secrets_are_scrubbed_from_extras_arguments_and_text(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """Secret extras (nested too), dict arguments and credentials in text are redacted."""
    logger, stream = json_logger
    logger.info("headers %s sent with Bearer abcdef123", {"Authorization": "Basic eHh4"},
                extra={"password": "hunter2", "request": {"cookie": "sid=1", "path": "/"}})
    (line,) = _lines(stream)
    assert line["message"] == (
        f"headers {{'Authorization': '{REDACTED}'}} sent with Bearer {REDACTED}"
    )
    assert line["password"] == REDACTED
    assert line["request"] == {"cookie": REDACTED, "path": "/"}


@pytest.fixture
def otlp_logs() -> Iterator[tuple[logging.Logger, InMemoryLogRecordExporter, TracerProvider]]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = OtlpLoggingHandler(logger_provider=provider)
    handler.addFilter(ScrubbingFilter())
    logger = logging.getLogger("tests.unit.otlp")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    LoggingInstrumentor().instrument(inject_trace_context=True,
                                     enable_log_auto_instrumentation=False)
    yield logger, exporter, TracerProvider()
    LoggingInstrumentor().uninstrument()
    logger.handlers.clear()
    provider.shutdown()


def test_otlp_records_carry_trace_context_without_duplicate_attributes(
    otlp_logs: tuple[logging.Logger, InMemoryLogRecordExporter, TracerProvider],
) -> None:
    """The OTLP record has the span's trace and span id as fields, and the extras as its only
    attributes: no otelTraceID/otelSpanID/otelServiceName copies of them."""
    logger, exporter, tracer_provider = otlp_logs
    with tracer_provider.get_tracer("t").start_as_current_span("s") as span:
        logger.info("hello %s", "ann", extra={"tenant": "acme", "obj": Exception()})
        ctx = span.get_span_context()
    (record,) = exporter.get_finished_logs()
    assert (record.log_record.trace_id, record.log_record.span_id) == (ctx.trace_id, ctx.span_id)
    assert record.log_record.body == "hello ann"
    assert dict(record.log_record.attributes or {}) == {"tenant": "acme", "obj": "Exception()"}


def test_otlp_records_are_scrubbed(
    otlp_logs: tuple[logging.Logger, InMemoryLogRecordExporter, TracerProvider],
) -> None:
    """Secret extras and credentials in the message are redacted in the OTLP record."""
    logger, exporter, _ = otlp_logs
    logger.warning("login token=%s", "abc123", extra={"api_key": "k", "user": "ann"})
    (record,) = exporter.get_finished_logs()
    assert record.log_record.body == f"login token={REDACTED}"
    assert dict(record.log_record.attributes or {}) == {"api_key": REDACTED, "user": "ann"}
