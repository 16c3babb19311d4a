"""Kafka plumbing of the services: topics, producers, consumers and a reply tail.

* :data:`TOPICS` and :func:`ensure_topics`: the broker's auto topic creation is off, so every
  service creates, at startup and idempotently, the four topics and their ``T.dlq`` (3
  partitions each, replication 1: the local broker is a single node).
* :func:`new_producer`: idempotent, ``acks=all``, bytes in and out; produce with
  :func:`otel.kafka.send_event` so the trace context travels in headers and body.
* :func:`new_event_consumer`: an :class:`otel.dlq.EventConsumer` (``process {topic}`` span,
  bounded retries, lossless DLQ, manual commits) with the services' retry policy.
* :class:`TopicTail`: reads every partition of a topic from its end without a consumer group
  (each instance sees every record), each record inside a ``process {topic}`` span; the worker
  uses it for ``tool.results`` and the gateway for ``conversation.replies``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from otel.dlq import Backoff, EventConsumer, Handler, RetryPolicy, Validator
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
        response = await admin.create_topics(
            [NewTopic(n, num_partitions=PARTITIONS, replication_factor=1) for n in missing],
            timeout_ms=15000,
        )
        for topic, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic}: error {code} {rest}")
        _LOG.info("created Kafka topics", extra={"topics": missing})
    finally:
        await admin.close()


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


TailHandler = Callable[[dict[str, Any]], Awaitable[None]]


class TopicTail:
    """Read ``topic`` from its current end on every partition, without a group, forever.

    Records that are not a JSON object are logged and skipped (they are another consumer's
    to dead-letter; a tail never commits). The handler runs inside the record's
    ``process {topic}`` span; its exceptions are logged, never raised.
    """

    def __init__(self, topic: str, handler: TailHandler, *, bootstrap: str, name: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._handler = handler
        self._name = name
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Assign every partition, move to its end, and start reading in the background."""
        tps = [TopicPartition(self._topic, p)
               for p in await partition_ids(self._bootstrap, self._topic)]
        await self._consumer.start()
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, so nothing produced after start is missed
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run(), name=f"tail {self._topic}")

    async def stop(self) -> None:
        """Stop reading and disconnect."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            record = await self._consumer.getone()
            try:
                event = json.loads(record.value) if record.value is not None else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                event = None
            if not isinstance(event, dict):
                _LOG.warning(
                    "skipping a record that is not a JSON object",
                    extra={"topic": record.topic, "partition": record.partition,
                           "offset": record.offset},
                )
                continue
            with process_span(record, consumer_group=None, body=event):
                try:
                    await self._handler(event)
                except Exception:
                    _LOG.exception("%s handler failed", self._name)
