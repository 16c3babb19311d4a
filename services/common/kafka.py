"""Kafka plumbing of the services: topics, producers, consumers and topic tails.

* :data:`TOPICS` and :func:`ensure_topics`: the broker's auto topic creation is off, so every
  service creates, at startup and idempotently, the four topics and their ``T.dlq`` (3
  partitions each). The broker decides the replication: its ``default.replication.factor``,
  read with DescribeConfigs, is 1 on the default profile's single node and 3 on the scale
  profile's three-node cluster (whose ``min.insync.replicas`` 2 applies to the topics). The
  admin client cannot send CreateTopics v4+, whose replication factor -1 would mean the same,
  and counting the live brokers would silently create under-replicated topics while one is
  down; a topic the cluster cannot place with that many replicas fails the creation.
* :func:`new_producer`: idempotent, ``acks=all``, bytes in and out; produce with
  :func:`otel.kafka.send_event` so the trace context travels in headers and body.
* :func:`new_event_consumer`: an :class:`otel.dlq.EventConsumer` (``process {topic}`` span,
  bounded retries, lossless DLQ, manual commits) with the services' retry policy.
* :class:`TopicTail`: reads every partition of a topic from its end without a consumer group
  (each instance sees every record), each valid record inside a ``process {topic}`` span; the
  worker uses it for ``tool.results`` and the gateway for ``conversation.replies``. Its records
  that nobody can use go to ``T.dlq`` through a DLQ guard group (below).

Dead-lettering a tailed topic
-----------------------------

A tail has no group and never commits, and every replica sees every record, so the tails
cannot be the ones that dead-letter: each replica would write the same poison record once.
Two kinds of record must also be told apart:

* *poison*: nobody can use it. The decision is a pure function of the record, the same on
  every instance: :func:`otel.dlq.decode_event` (null tombstone, not UTF-8, not JSON:
  ``undecodable_event``; JSON that is not an object: ``invalid_event``) and then the topic's
  validator (missing or mistyped fields the handlers need: ``invalid_event``);
* *not for this instance*: valid, but for another gateway's WebSocket or another worker's
  pending tool request. Handlers ignore those; they are never dead-lettered.

Each tail therefore also runs a DLQ guard: an :class:`otel.dlq.EventConsumer` with no handler
and the same validator, in the group ``guard_group`` (``<service>-dlq-guard``) that every
replica of the service joins, so each partition is guarded by exactly one replica at a time.
The guard commits a valid record without a span (not even a ``receive`` one), and dead-letters
a poison one through the library's one DLQ path: the original bytes and headers plus the
``dlq.*`` headers (``dlq.consumer.group`` is the guard group), a ``process {topic}`` span with
ERROR, ``error.type`` and ``soma.sampling.keep``, one
``dlq_events_total{source_topic, error_type}`` on the broker's ack, and the commit only after
that ack (a failing write blocks the partition and is retried until it succeeds). So each
poison record lands in ``T.dlq`` once, with any number of replicas (at least once across a
crash or rebalance between the ack and the commit, as for every
:class:`~otel.dlq.EventConsumer`). The first start of a guard group reads the retained history
of its topic (``earliest``), so nothing produced before it is missed. The
tail drops poison records itself, at DEBUG (the guard logs and counts them).

A trace context that is missing or malformed does not make a record poison, as for every
consumer (:mod:`otel.kafka`): the tail processes it in a new trace and
``soma_trace_context_invalid_total{source, reason}`` counts it; a poison record's broken
headers are kept byte for byte in ``T.dlq``.

A handler that raises on a valid record is not retried (the record is this instance's only;
the next one is not held back): its ``process {topic}`` span gets status ERROR, ``error.type``
(the error's ``error_type`` or class name), the exception event and ``soma.sampling.keep``
(the trace is always kept), and an ERROR log inside that span names the record and its trace
id. The record itself stays in the topic. A reader or guard task that ends with an error is
logged at ERROR.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from opentelemetry import trace

import otel
from otel.dlq import (
    SAMPLING_KEEP,
    Backoff,
    Event,
    EventConsumer,
    Handler,
    RetryPolicy,
    Validator,
    decode_event,
    error_type,
)
from otel.kafka import process_span

_LOG = logging.getLogger(__name__)

CONVERSATION_EVENTS: Final = "conversation.events"
TOOL_REQUESTS: Final = "tool.requests"
TOOL_RESULTS: Final = "tool.results"
CONVERSATION_REPLIES: Final = "conversation.replies"
TOPICS: Final = (CONVERSATION_EVENTS, TOOL_REQUESTS, TOOL_RESULTS, CONVERSATION_REPLIES)
PARTITIONS: Final = 3

#: Handler runs per record before it is dead-lettered, and the waits between them.
RETRY_POLICY: Final = RetryPolicy(max_attempts=3, backoff=Backoff(initial=0.2, maximum=2.0))

_TOPIC_ALREADY_EXISTS: Final = TopicAlreadyExistsError.errno


async def ensure_topics(bootstrap: str) -> None:
    """Create the topics and their dead-letter topics unless they exist; raise on other errors."""
    names = [*TOPICS, *(f"{t}.dlq" for t in TOPICS)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if not missing:
            return
        replicas = await default_replication_factor(admin)
        response = await admin.create_topics(
            [NewTopic(n, num_partitions=PARTITIONS, replication_factor=replicas)
             for n in missing],
            timeout_ms=15000,
        )
        for topic, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic}: error {code} {rest}")
        _LOG.info("created Kafka topics", extra={"topics": missing, "replicas": replicas})
    finally:
        await admin.close()


async def default_replication_factor(admin: AIOKafkaAdminClient) -> int:
    """The ``default.replication.factor`` of a broker of the cluster ``admin`` is connected to."""
    broker = str((await admin.describe_cluster())["brokers"][0]["node_id"])
    (response,) = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, broker, {"default.replication.factor": None})]
    )
    ((code, message, _, _, entries),) = response.resources
    if code != 0:
        raise RuntimeError(f"cannot describe broker {broker}: error {code} {message}")
    ((_, value, *_),) = entries
    return int(value)


async def partition_ids(bootstrap: str, topic: str) -> list[int]:
    """The partition ids of ``topic`` from the broker's metadata; raise if it has none."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    ids = sorted(p["partition"] for p in described["partitions"])
    if described["error_code"] != 0 or not ids:
        raise RuntimeError(f"topic {topic} is unavailable (error {described['error_code']})")
    return ids


async def kafka_reachable(bootstrap: str, timeout: float = 3.0) -> bool:
    """Tell whether the broker answers a metadata request within ``timeout`` seconds."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.describe_cluster(), timeout)
        return True
    except Exception:
        return False
    finally:
        await admin.close()


async def new_producer(bootstrap: str) -> AIOKafkaProducer:
    """Start and return an idempotent ``acks=all`` producer without serialisers."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=0
    )
    await producer.start()
    return producer


def new_event_consumer(
    topic: str,
    handler: Handler,
    *,
    bootstrap: str,
    group_id: str,
    validator: Validator | None = None,
) -> EventConsumer:
    """Return an :class:`otel.dlq.EventConsumer` for ``topic`` with :data:`RETRY_POLICY`."""
    return EventConsumer(
        [topic],
        handler,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        validator=validator,
        retry=RETRY_POLICY,
    )


TailHandler = Callable[[Event], Awaitable[None]]
"""``async def handler(event)``: runs for each valid record of the tail, on every instance."""


class TopicTail:
    """Read ``topic`` from its current end on every partition, without a group, forever.

    Each record that decodes and passes ``validator`` goes to ``handler`` inside its
    ``process {topic}`` span; the others are left to the DLQ guard, an
    :class:`otel.dlq.EventConsumer` in group ``guard_group`` that dead-letters them to
    ``{topic}.dlq`` (see the module docstring). Handler exceptions are recorded and logged,
    never raised.
    """

    def __init__(
        self,
        topic: str,
        handler: TailHandler,
        *,
        validator: Validator,
        guard_group: str,
        bootstrap: str,
        name: str,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._handler = handler
        self._validator = validator
        self._name = name
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        self._guard = EventConsumer(
            [topic], None, bootstrap_servers=bootstrap, group_id=guard_group,
            validator=validator,
        )
        self._reader: asyncio.Task[None] | None = None
        self._guarding: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the DLQ guard; assign every partition, move to its end, and start reading."""
        await self._guard.start()
        self._guarding = asyncio.create_task(self._guard.run(), name=f"dlq guard {self._topic}")
        self._guarding.add_done_callback(self._ended)
        tps = [TopicPartition(self._topic, p)
               for p in await partition_ids(self._bootstrap, self._topic)]
        await self._consumer.start()
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, so nothing produced after start is missed
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._run(), name=f"tail {self._topic}")
        self._reader.add_done_callback(self._ended)

    async def stop(self) -> None:
        """Stop reading and guarding (the guard after its current record), then disconnect."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._consumer.stop()
        await self._guard.stop()
        if self._guarding is not None:
            await asyncio.gather(self._guarding, return_exceptions=True)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            _LOG.error("%s: task %r ended with an error", self._name, task.get_name(),
                       exc_info=error)

    async def _run(self) -> None:
        while True:
            record = await self._consumer.getone()
            try:
                event = decode_event(record.value)
                self._validator(event)
            except Exception as exc:
                _LOG.debug("%s[%d]@%d cannot be used (%s); left to the DLQ guard",
                           record.topic, record.partition, record.offset, exc)
                continue
            with process_span(record, consumer_group=None, body=event) as span:
                try:
                    await self._handler(event)
                except Exception as exc:
                    otel.record_failure(span, error_type(exc), exc)
                    span.set_attribute(SAMPLING_KEEP, True)
                    _LOG.error(
                        "%s handler failed on %s[%d]@%d; not retried; trace_id=%s", self._name,
                        record.topic, record.partition, record.offset,
                        trace.format_trace_id(span.get_span_context().trace_id),
                        exc_info=True,
                    )
