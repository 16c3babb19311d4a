"""JSON log lines on stdout and OTLP log records, both scrubbed and both carrying trace context.

One JSON object per line (:class:`JsonFormatter`)::

    {"timestamp": "2025-01-31T12:00:00.123Z", "level": "INFO", "logger": "gateway.ws",
     "message": "session opened", "module": "ws", "function": "accept", "line": 42,
     "service.name": "gateway", "trace_id": "4bf9...", "span_id": "00f0...",
     "tenant": "acme", "exception": "Traceback ..."}

* ``timestamp`` is the record's own creation time (``record.created``), RFC 3339 UTC with
  milliseconds, not the time of formatting.
* ``trace_id``/``span_id`` (W3C lowercase hex) appear only inside a valid span.
* Every ``extra=`` field is a top-level key. They are the record attributes that a plain
  ``logging.LogRecord`` does not have (the seed read ``record.extra``, which logging never
  sets). An extra whose name collides with one of the keys above is kept as ``extra.<name>``.
  The ``otel*`` correlation fields of ``OTEL_PYTHON_LOG_CORRELATION`` are dropped: they
  duplicate ``trace_id``/``span_id``/``service.name``.
* ``exception`` holds the formatted traceback, ``stack`` the ``stack_info``.
* Values JSON cannot represent become their ``repr`` (``str`` for datetimes is ISO 8601;
  NaN and infinities become strings); a broken ``repr`` becomes ``<unrepresentable T>``. A
  message whose ``%`` arguments do not match still produces a line. Output is ASCII
  (``ensure_ascii``): every control character, line separator and non-ASCII character is
  escaped, so a line never contains a raw newline.

OTLP (:class:`OtlpLoggingHandler`): the ``opentelemetry-instrumentation-logging`` handler, minus
the ``otel*`` correlation attributes (the record's trace context and the resource already carry
them), with values OTLP cannot carry turned into their ``repr``. Under ``opentelemetry-instrument``
the instrumentation's own handler is used and only gets the :class:`ScrubbingFilter`; leave
``OTEL_PYTHON_LOG_CORRELATION`` unset there, or its fields become duplicate OTLP attributes.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler

from otel._scrubbing import Redactions, scrub_text, scrub_value

__all__ = [
    "CORRELATION_FIELDS",
    "JsonFormatter",
    "OtlpLoggingHandler",
    "ScrubbingFilter",
    "record_extras",
]

#: Attributes of a LogRecord made by ``logging.makeRecord`` without ``extra=``.
_PLAIN_RECORD_FIELDS: Final = frozenset(
    vars(logging.LogRecord("name", logging.INFO, "pathname", 1, "msg", None, None))
) | {"message", "asctime", "taskName"}

#: Fields ``opentelemetry-instrumentation-logging`` injects with ``OTEL_PYTHON_LOG_CORRELATION``.
CORRELATION_FIELDS: Final = frozenset(
    {"otelSpanID", "otelTraceID", "otelTraceSampled", "otelServiceName"}
)

_OWN_KEYS: Final = frozenset(
    {
        "timestamp", "level", "logger", "message", "module", "function", "line", "service.name",
        "trace_id", "span_id", "exception", "stack",
    }
)
_MAX_DEPTH: Final = 16


def record_extras(record: logging.LogRecord) -> dict[str, object]:
    """The ``extra=`` fields of ``record`` (correlation fields excluded)."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _PLAIN_RECORD_FIELDS and key not in CORRELATION_FIELDS
    }


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


def _jsonable(value: object, depth: int = 0) -> object:
    """A value ``json.dumps`` accepts with ``allow_nan=False``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return _safe_repr(value)
    if isinstance(value, Mapping):
        return {
            (k if isinstance(k, str) else _safe_repr(k)): _jsonable(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    return _safe_repr(value)


def _dumps(data: Mapping[str, object]) -> str:
    try:
        return json.dumps(_jsonable(data), ensure_ascii=True, allow_nan=False)
    except Exception:  # pragma: no cover - _jsonable leaves nothing json.dumps rejects
        return json.dumps({"message": _safe_repr(data)}, ensure_ascii=True)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        return (
            f"{_safe_repr(record.msg)} (arguments could not be formatted: "
            f"{_safe_repr(record.args)})"
        )


def _rfc3339(created: float) -> str:
    stamp = _dt.datetime.fromtimestamp(created, tz=_dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line (see the module docstring)."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        redactions = Redactions()
        data: dict[str, object] = {
            "timestamp": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub_text(_message(record), redactions),
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "service.name": self.service_name,
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            data["trace_id"] = trace.format_trace_id(context.trace_id)
            data["span_id"] = trace.format_span_id(context.span_id)
        for key, value in record_extras(record).items():
            target = f"extra.{key}" if key in _OWN_KEYS else key
            data[target] = scrub_value(value, redactions, key)
        if record.exc_info:
            data["exception"] = scrub_text(self.formatException(record.exc_info), redactions)
        elif record.exc_text:
            data["exception"] = scrub_text(record.exc_text, redactions)
        if record.stack_info:
            data["stack"] = scrub_text(self.formatStack(record.stack_info), redactions)
        redactions.record("logs")
        return _dumps(data)


class ScrubbingFilter(logging.Filter):
    """Redacts secrets in a record in place (extras, message arguments, message text).

    The record object is shared by all handlers, so once a handler with this filter has seen it,
    later handlers see the redacted values too. Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redactions = Redactions()
        for key, value in record_extras(record).items():
            scrubbed = scrub_value(value, redactions, key)
            if scrubbed is not value:
                setattr(record, key, scrubbed)
        before = dict(redactions.counts)
        args = scrub_value(record.args, redactions) if record.args else record.args
        try:
            message = str(record.msg) % args if args else str(record.msg)
        except Exception:
            message = None
        if message is not None:
            text = scrub_text(message, redactions)
            if redactions.counts != before:
                record.msg, record.args = text, None
        redactions.record("logs")
        return True


def _otlp_value(value: object, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if depth >= _MAX_DEPTH:
        return _safe_repr(value)
    if isinstance(value, Mapping):
        return {str(k): _otlp_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_otlp_value(v, depth + 1) for v in value]
    return _safe_repr(value)


class OtlpLoggingHandler(LoggingHandler):
    """The instrumentation's OTLP handler without duplicate correlation attributes."""

    def _get_attributes(self, record: logging.LogRecord) -> tuple[dict[str, Any], str | None]:
        attributes, event_name = super()._get_attributes(record)
        cleaned = {
            key: _otlp_value(value)
            for key, value in attributes.items()
            if key not in CORRELATION_FIELDS
        }
        return cleaned, event_name
