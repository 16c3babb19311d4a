"""Rebalances on the real broker: a replica joining the group never makes a record handled twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from tests.kafka.conftest import Telemetry, Topics, new_group, running, wait_until, worker

RECORDS = 20
SLOW_SECONDS = 4.0


async def test_a_record_in_progress_when_a_replica_joins_is_handled_once_and_committed_first(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """A second replica joining while the first handles a slow record starts after that
    record's commit: every record is handled exactly once across both replicas."""
    topic = await topics.create("rebalance")
    group = new_group()
    handled: Counter[int] = Counter()
    slow_started = asyncio.Event()

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        if record.offset == 0:
            slow_started.set()
            await asyncio.sleep(SLOW_SECONDS)  # the second replica joins meanwhile
        handled[record.offset] += 1

    await producer.send_and_wait(topic, b'{"n": 0}')
    async with running(worker([topic], handle, telemetry, group=group)):
        await asyncio.wait_for(slow_started.wait(), 30)
        async with running(worker([topic], handle, telemetry, group=group)):
            for n in range(1, RECORDS):
                await producer.send_and_wait(topic, b'{"n": %d}' % n)
            await wait_until(lambda: topics.committed(group, topic),
                             lambda offset: offset == RECORDS, "every record committed")
            await asyncio.sleep(2)  # a second handling of any record would show now

    assert handled == Counter(range(RECORDS))


async def test_a_handler_that_outlasts_the_revoke_wait_does_not_hold_the_group(
    topics: Topics, telemetry: Telemetry, producer: AIOKafkaProducer
) -> None:
    """With a handler stuck past ``revoke_wait_seconds`` the rebalance still completes: the
    joining replica gets its partition and handles a record while the first is still stuck."""
    topic = await topics.create("stuck", partitions=2)
    group = new_group()
    release = asyncio.Event()
    stuck_started = asyncio.Event()
    handled: list[tuple[int, int]] = []

    async def stuck(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        stuck_started.set()
        await release.wait()

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        handled.append((record.partition, record.offset))

    await producer.send_and_wait(topic, b'{"n": 0}', partition=0)
    first = worker([topic], stuck, telemetry, group=group, revoke_wait_seconds=1.0)
    await first.start()
    first_run = asyncio.create_task(first.run())
    try:
        await asyncio.wait_for(stuck_started.wait(), 30)
        await producer.send_and_wait(topic, b'{"n": 1}', partition=1)
        async with running(worker([topic], handle, telemetry, group=group)):
            await wait_until(lambda: list(handled), bool,
                             "the joining replica handling a record", timeout=60)
            assert not release.is_set()
    finally:
        release.set()
        await first.stop()
        await first_run
