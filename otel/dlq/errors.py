"""The exceptions a handler raises to steer retries and dead-lettering.

See :mod:`otel.dlq` for the manual.
"""

from __future__ import annotations

from typing import ClassVar


class ProcessingError(Exception):
    """Base of the library's processing errors; ``error_type`` labels spans and metrics.

    ``error_type`` is a short snake_case class (``error.type`` on the process span and the
    ``error_type`` label of ``dlq_events_total``); pass one to override the class default,
    e.g. ``RetryableError("SLM timed out", error_type="slm_timeout")``.
    """

    default_error_type: ClassVar[str] = "processing_error"

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type or self.default_error_type


class RetryableError(ProcessingError):
    """A failure that may pass on a later attempt: retried with backoff, then dead-lettered."""

    default_error_type: ClassVar[str] = "retryable_error"


class PermanentError(ProcessingError):
    """A failure that no retry can fix: the record goes to the DLQ at once."""

    default_error_type: ClassVar[str] = "permanent_error"


class InvalidEventError(PermanentError):
    """The event decoded but breaks the schema (raised by validators and handlers)."""

    default_error_type: ClassVar[str] = "invalid_event"


class UndecodableEventError(InvalidEventError):
    """The record value is not a UTF-8 JSON document (or is a null tombstone)."""

    default_error_type: ClassVar[str] = "undecodable_event"


def error_class(error: BaseException) -> str:
    """Return the exception's fully qualified class name (builtins without a module)."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def error_type(error: BaseException) -> str:
    """Return the ``error.type`` of ``error``: its ``error_type``, else its class name."""
    if isinstance(error, ProcessingError):
        return error.error_type
    return error_class(error)
