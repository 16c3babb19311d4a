"""The DLQ record's header convention (modelled on Kafka Connect's ``__connect.errors.*``).

See :mod:`otel.dlq` for the manual.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka.structs import ConsumerRecord

from otel.dlq.errors import error_class

DLQ_SUFFIX: Final = ".dlq"

ORIGINAL_TOPIC: Final = "dlq.original.topic"
ORIGINAL_PARTITION: Final = "dlq.original.partition"
ORIGINAL_OFFSET: Final = "dlq.original.offset"
ORIGINAL_TIMESTAMP: Final = "dlq.original.timestamp"
CONSUMER_GROUP: Final = "dlq.consumer.group"
ERROR_CLASS: Final = "dlq.error.class"
ERROR_TYPE: Final = "dlq.error.type"
ERROR_MESSAGE: Final = "dlq.error.message"
ERROR_STACKTRACE: Final = "dlq.error.stacktrace"
ATTEMPTS: Final = "dlq.attempts"
FIRST_FAILURE: Final = "dlq.first.failure"
LAST_FAILURE: Final = "dlq.last.failure"
TRACE_ID: Final = "dlq.trace.id"
REPLAY_COUNT: Final = "dlq.replay.count"

FAILURE_HEADERS: Final = (
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    CONSUMER_GROUP,
    ERROR_CLASS,
    ERROR_TYPE,
    ERROR_MESSAGE,
    ERROR_STACKTRACE,
    ATTEMPTS,
    FIRST_FAILURE,
    LAST_FAILURE,
    TRACE_ID,
)
"""The headers the DLQ writer sets, in this order, after the original headers."""

MAX_MESSAGE_BYTES: Final = 4096
MAX_STACKTRACE_BYTES: Final = 16384


def dlq_topic(source_topic: str) -> str:
    """Return the dead-letter topic of ``source_topic``: ``{source_topic}.dlq``."""
    return source_topic + DLQ_SUFFIX


@dataclass(frozen=True)
class Failure:
    """Why a record is dead-lettered: the last error and the attempt history."""

    error: BaseException
    attempts: int
    first_failure_ms: int
    last_failure_ms: int
    error_type: str


def _truncate(text: str, limit: int) -> bytes:
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


def dead_letter_headers(
    record: ConsumerRecord[Any, Any],
    *,
    consumer_group: str,
    failure: Failure,
    trace_id: str,
) -> list[tuple[str, bytes | None]]:
    """Return the DLQ record's headers: the original ones, then the ``dlq.*`` failure headers.

    Original headers keep their order and bytes (``traceparent`` included); only headers named
    like one of :data:`FAILURE_HEADERS` are dropped, so each appears once.
    """
    stack = "".join(traceback.format_exception(failure.error))
    failure_values: dict[str, bytes] = {
        ORIGINAL_TOPIC: record.topic.encode(),
        ORIGINAL_PARTITION: str(record.partition).encode(),
        ORIGINAL_OFFSET: str(record.offset).encode(),
        ORIGINAL_TIMESTAMP: str(record.timestamp).encode(),
        CONSUMER_GROUP: consumer_group.encode(),
        ERROR_CLASS: error_class(failure.error).encode(),
        ERROR_TYPE: failure.error_type.encode(),
        ERROR_MESSAGE: _truncate(str(failure.error), MAX_MESSAGE_BYTES),
        ERROR_STACKTRACE: _truncate(stack, MAX_STACKTRACE_BYTES),
        ATTEMPTS: str(failure.attempts).encode(),
        FIRST_FAILURE: str(failure.first_failure_ms).encode(),
        LAST_FAILURE: str(failure.last_failure_ms).encode(),
        TRACE_ID: trace_id.encode(),
    }
    original = [(key, value) for key, value in record.headers if key not in failure_values]
    return [*original, *failure_values.items()]


def header_text(headers: Sequence[tuple[str, bytes | None]], key: str) -> str | None:
    """Return the first header named ``key`` as text (invalid UTF-8 escaped), or None."""
    for item_key, value in headers:
        if item_key == key:
            return None if value is None else value.decode("utf-8", "backslashreplace")
    return None


def replay_headers(
    headers: Sequence[tuple[str, bytes | None]],
) -> list[tuple[str, bytes | None]]:
    """Return the headers of a replayed record: the original ones plus ``dlq.replay.count``+1.

    The failure headers are dropped (they describe the failure, not the event); every other
    header, ``traceparent`` included, is kept in order.
    """
    previous = header_text(headers, REPLAY_COUNT)
    count = int(previous) + 1 if previous is not None and previous.isdigit() else 1
    kept = [
        (key, value)
        for key, value in headers
        if key not in FAILURE_HEADERS and key != REPLAY_COUNT
    ]
    return [*kept, (REPLAY_COUNT, str(count).encode())]
