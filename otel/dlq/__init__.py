"""Consume with bounded retries and a lossless dead-letter queue (``T.dlq``), plus its CLI.

Usage
-----

.. code:: python

    from otel.dlq import EventConsumer, InvalidEventError, PermanentError, RetryableError

    def validate(event: dict) -> None:
        if not isinstance(event.get("session_id"), str):
            raise InvalidEventError("session_id must be a string")

    async def handle(event: dict, record) -> None:
        ...                       # runs inside the ``process {topic}`` span (see otel.kafka)
        raise RetryableError("SLM timed out", error_type="slm_timeout")

    worker = EventConsumer(["conversation.events"], handle,
                           bootstrap_servers="127.0.0.1:9092",
                           group_id="conversation-worker", validator=validate)
    await worker.start()
    task = asyncio.create_task(worker.run())
    ...
    await worker.stop()           # returns after the current record; then disconnects

What happens to each record (one at a time, in partition order, via ``getone()``):

1. The value is decoded as a UTF-8 JSON object. Null, non-UTF-8 or non-JSON values
   (``UndecodableEventError``, error type ``undecodable_event``) and JSON that is not an
   object (``InvalidEventError``, ``invalid_event``) go to the DLQ at once.
2. ``validator(event)``, if given; any exception means ``invalid_event`` (a
   ``ProcessingError`` keeps its own ``error_type``): DLQ at once.
3. ``handler(event, record)`` runs up to ``retry.max_attempts`` times.
   ``PermanentError`` (and ``InvalidEventError``) goes to the DLQ at once.
   ``RetryableError`` *and any other exception* is retried: unknown exceptions are usually
   transient (network, timeouts) and a bounded retry is cheap, as in Spring Kafka's
   ``DefaultErrorHandler``. Between attempts the wait is full-jitter exponential backoff
   (``Backoff``: uniform in ``[0, min(maximum, initial * 2**(n-1))]``); each retry adds a span
   event ``retry`` to the process span. The last failure goes to the DLQ.
   Keep the total retry time below the consumer's ``max_poll_interval_ms`` (300 s default).
4. The source offset is committed (``offset + 1``, auto-commit is off) only after the handler
   succeeded or the DLQ write was acknowledged (idempotent producer, ``acks=all``).

DLQ guard (``handler=None``)
----------------------------

A topic that is read without a consumer group (every instance sees every record, nothing is
committed) still gets its ``T.dlq`` from exactly one party: an ``EventConsumer(["T"], None,
group_id="<service>-dlq-guard", validator=...)`` run by every instance (the group gives each
partition to one of them). It only decodes and validates: a valid record is committed with no
span and no log (nothing processed it; the group-less readers do), and the guard fetches with
the uninstrumented ``getone`` (no aiokafka ``receive`` span), so a valid record's trace is the
same with or without a guard; an invalid one is
dead-lettered exactly as above (steps 1, 2 and 4, process span with ``soma.sampling.keep``,
``dlq_events_total``, the lossless write). The validator must be a pure function of the event
and the group-less readers must drop exactly what it rejects, so that a record is either used
or dead-lettered, never both and never neither.

Dead-lettering
--------------

The DLQ record goes to ``{T}.dlq`` (the topic must exist; the library never creates it) with
the original key and value bytes unchanged, partitioned by key, and these headers: first the
original headers in order, byte for byte (``traceparent``, ``tracestate``, ``baggage`` and any
``dlq.replay.count`` included), then, all UTF-8 text:

==========================  ================================================================
header                      value
==========================  ================================================================
``dlq.original.topic``      source topic
``dlq.original.partition``  source partition (decimal)
``dlq.original.offset``     source offset (decimal)
``dlq.original.timestamp``  source record timestamp, ms since the epoch
``dlq.consumer.group``      consumer group that gave up
``dlq.error.class``         fully qualified exception class (``otel.dlq.errors.PermanentError``)
``dlq.error.type``          ``error.type``: ``undecodable_event``, ``invalid_event``,
                            ``permanent_error``, ``retryable_error``, a custom ``error_type``,
                            or the class name for other exceptions
``dlq.error.message``       ``str(exception)``, cut to 4 KiB
``dlq.error.stacktrace``    formatted traceback with causes, cut to 16 KiB
``dlq.attempts``            processing attempts made (1 when rejected before the handler)
``dlq.first.failure``       time of the first failure, ms since the epoch
``dlq.last.failure``        time of the last failure, ms since the epoch
``dlq.trace.id``            trace id (32 hex) of the process span, also when the record
                            arrived without context and started a new trace
==========================  ================================================================

An original header with one of these names is replaced, so each appears once. With the
aiokafka instrumentation active, its ``send`` span appends one more ``traceparent`` after the
original one (first one wins when reading).

The process span of a dead-lettered record gets status ERROR, ``error.type``, the exception
event and ``soma.sampling.keep = true`` (the collector's tail sampler keeps the trace). On the
broker's ack the counter ``dlq_events_total{source_topic, error_type}`` (unit ``{event}``,
global or given MeterProvider) adds 1.

If the DLQ write fails, nothing is committed and the partition does not move on: the consumer
logs at ERROR (message carries the trace id), seeks back to the record, pauses the partition,
and after a full-jitter backoff (``dlq_backoff``, 0.5 s doubling to 30 s) fetches the record
again and retries only the write, forever, with a fresh producer (aiokafka's idempotent
producer cannot send after a rejected batch). Other partitions keep flowing. If the partition
is revoked meanwhile, its new owner starts again from the committed offset. Delivery to the
DLQ is at least once: a crash between the ack and the commit writes the record again.

Rebalances (a replica joining or leaving the group) wait for the record in progress: the
consumer's rebalance listener holds the revocation until that record is handled and committed
(at most ``revoke_wait_seconds``, 60 s), so its new owner starts after it and does not handle
it again. What stays at least once is a crash or kill of the process between the handler's
effects (a reply sent) and the commit: the new owner handles that one record again.

Arguments
---------

``EventConsumer(topics, handler, *, bootstrap_servers, group_id, validator=None,
retry=RetryPolicy(max_attempts=5, backoff=Backoff(initial=0.2, maximum=5.0)),
dlq_backoff=Backoff(0.5, 30.0), consumer_config=None, producer_config=None,
tracer_provider=None, meter_provider=None, process_hook=None, revoke_wait_seconds=60.0)``;
``handler=None`` makes a
DLQ guard (above; ``retry`` then never applies).
``consumer_config``/``producer_config`` are extra aiokafka keyword arguments; the settings the
guarantees depend on (auto-commit, idempotence, acks, serialisers, group, servers) are
refused. ``process_hook(span, record)`` runs when each process span starts; its exceptions
are logged and never reach the consumer.

CLI
---

``python -m otel.dlq [--bootstrap-servers H:P] [--timeout S] COMMAND`` (servers default to
``$KAFKA_BOOTSTRAP``, then ``127.0.0.1:9092``):

* ``list T.dlq [--limit N] [--json]``: partition, offset, original position, error class and
  type, attempts, last failure time.
* ``show T.dlq PARTITION OFFSET [--json]``: key, every header in order, value.
* ``replay T.dlq [--to TOPIC] [--rate R] [--group G] [--limit N]``: produces each record to
  its ``dlq.original.topic`` (or ``--to``) with the same key, value and non-``dlq.*`` headers
  (trace context kept) plus ``dlq.replay.count`` (previous + 1), at most ``R`` per second,
  committing group ``G`` (default ``otel-dlq-replay.T.dlq``) after each ack: a second run
  replays only newer records.
* ``purge T.dlq (--before OFFSET --partition P | --all)``: Kafka DeleteRecords, i.e. deletes
  every record below the offset (``--all``: below each partition's current end).

Exit codes: 0 ok, 1 Kafka error, 2 bad arguments, 3 broker unreachable, 4 topic or record not
found.
"""

from otel.dlq.consumer import (
    DLQ_EVENTS_TOTAL,
    SAMPLING_KEEP,
    Event,
    EventConsumer,
    Handler,
    Validator,
    decode_event,
)
from otel.dlq.errors import (
    InvalidEventError,
    PermanentError,
    ProcessingError,
    RetryableError,
    UndecodableEventError,
    error_class,
    error_type,
)
from otel.dlq.headers import FAILURE_HEADERS, REPLAY_COUNT, dead_letter_headers, dlq_topic
from otel.dlq.retry import Backoff, RetryPolicy

__all__ = [
    "DLQ_EVENTS_TOTAL",
    "FAILURE_HEADERS",
    "REPLAY_COUNT",
    "SAMPLING_KEEP",
    "Backoff",
    "Event",
    "EventConsumer",
    "Handler",
    "InvalidEventError",
    "PermanentError",
    "ProcessingError",
    "RetryPolicy",
    "RetryableError",
    "UndecodableEventError",
    "Validator",
    "dead_letter_headers",
    "decode_event",
    "dlq_topic",
    "error_class",
    "error_type",
]
