"""The scale profile's three-node KRaft cluster (stack/kafka/run.sh's cluster form, issue 16).

The tests start their own cluster, never the stack's: three ``run.sh KAFKA_HOME DATA_DIR N
BROKER_PORTS CONTROLLER_PORTS JMX_PORTS`` processes on free ports of 127.0.0.1, their data in a
temporary folder, each node broker and controller with stack/kafka/cluster.properties
(replication 3, ``min.insync.replicas`` 2). A node is ready when stack/kafka_ready.py sees
three live brokers through it. Each test first brings every node back and waits until its
topic's partitions have three in-sync replicas; the module's teardown stops every process it
started, also when a test fails (SIGTERM, then SIGKILL after 5 s: the last node of a cluster
cannot finish a controlled shutdown without a controller quorum, and its data is thrown away).

Checked: :func:`services.common.kafka.ensure_topics` creates every topic and its ``.dlq`` with
three replicas and a minimum ISR of 2; records produced by the services' producer while a broker
stops (SIGTERM, controlled shutdown) are all consumed exactly once by the services' consumer;
with two of three brokers down an ``acks=all`` write is refused with NOT_ENOUGH_REPLICAS: a
producer without idempotence fails with :class:`~aiokafka.errors.NotEnoughReplicasError`, and
the services' idempotent producer (which retries forever) holds the record until a second
broker is back, then delivers it once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import NotEnoughReplicasError
from aiokafka.structs import ConsumerRecord

from otel.dlq import Event
from services.common.kafka import (
    PARTITIONS,
    TOPICS,
    ensure_topics,
    new_event_consumer,
    new_producer,
)
from stack.stackctl import stack_paths
from tests.collector.moved import free_ports
from tests.kafka.conftest import wait_until

pytestmark = pytest.mark.scale

REPO = Path(__file__).resolve().parents[2]
NODES = (1, 2, 3)
READY_SECONDS = 180.0


@dataclass
class Cluster:
    """Three ``run.sh`` nodes on moved ports; start, stop and wait for them by node id."""

    home: Path
    root: Path
    brokers: list[int]
    controllers: list[int]
    jmx: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """Every node's broker address, comma-separated."""
        return ",".join(f"127.0.0.1:{port}" for port in self.brokers)

    def address(self, node: int) -> str:
        """Node ``node``'s broker address."""
        return f"127.0.0.1:{self.brokers[node - 1]}"

    def log(self, node: int) -> Path:
        """Node ``node``'s stdout and stderr."""
        return self.root / f"kafka-{node}.log"

    def start(self, node: int) -> None:
        """Start node ``node`` (formatting its storage on the first start)."""
        lists = [",".join(map(str, ports)) for ports in (self.brokers, self.controllers, self.jmx)]
        with self.log(node).open("ab") as log:
            self.processes[node] = subprocess.Popen(
                [str(REPO / "stack" / "kafka" / "run.sh"), str(self.home),
                 str(self.root / f"kafka-{node}"), str(node), *lists],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, node: int, grace: float = 30.0) -> None:
        """SIGTERM node ``node`` (controlled shutdown) and wait; SIGKILL it after ``grace`` s."""
        process = self.processes.pop(node)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def heal(self) -> None:
        """Start the nodes that are not running; wait until each sees three live brokers."""
        for node in NODES:
            if node not in self.processes:
                self.start(node)
        deadline = time.monotonic() + READY_SECONDS
        for node in NODES:
            while (problem := self.not_ready(node)) is not None:
                if time.monotonic() > deadline:
                    tail = self.log(node).read_text(errors="replace").splitlines()[-20:]
                    pytest.fail(f"Kafka cluster node {node} not ready after {READY_SECONDS} s: "
                                f"{problem}; {self.log(node)} ends:\n" + "\n".join(tail))
                time.sleep(0.5)

    def not_ready(self, node: int) -> str | None:
        """Why node ``node`` is not ready (stack/kafka_ready.py with 3 brokers), or None."""
        process = self.processes[node]
        if process.poll() is not None:
            return f"run.sh exited with {process.returncode}"
        check = subprocess.run(
            [sys.executable, str(REPO / "stack" / "kafka_ready.py"), self.address(node), "3"],
            capture_output=True, text=True, check=False,
        )
        return None if check.returncode == 0 else check.stderr.strip()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh three-node cluster on free ports; every process is stopped at teardown."""
    home = stack_paths().cached("kafka/*/.complete").parent
    if not (home / ".complete").is_file():
        pytest.fail(f"Kafka build missing in {home} (run stack/stack up once to install it)")
    ports = free_ports(9)
    made = Cluster(home, tmp_path_factory.mktemp("kafka-cluster"),
                   ports[0:3], ports[3:6], ports[6:9])
    try:
        made.heal()
        yield made
    finally:
        for node in list(made.processes):
            made.stop(node, grace=5.0)


@pytest.fixture
async def admin(cluster: Cluster) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client of the healed cluster."""
    cluster.heal()
    client = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=15000)
    await client.start()
    yield client
    await client.close()


async def replicas(
    admin: AIOKafkaAdminClient, topic: str,
) -> dict[int, tuple[list[int], list[int]]]:
    """``{partition: (replicas, in-sync replicas)}`` of ``topic``, sorted; empty when unknown."""
    (described,) = await admin.describe_topics([topic])
    if described["error_code"] != 0:
        return {}
    return {p["partition"]: (sorted(p["replicas"]), sorted(p["isr"]))
            for p in described["partitions"]}


async def new_topic(admin: AIOKafkaAdminClient, prefix: str) -> str:
    """Create ``{prefix}-{uuid}`` (3 partitions, 3 replicas); wait until fully in sync."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    await admin.create_topics([NewTopic(name, PARTITIONS, 3)])
    full = {p: ([1, 2, 3], [1, 2, 3]) for p in range(PARTITIONS)}
    await wait_until(lambda: replicas(admin, name), lambda found: found == full,
                     f"{name} fully in sync", timeout=60)
    return name


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of each partition of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def test_ensure_topics_creates_every_topic_and_dlq_with_three_replicas_and_min_isr_two(
    cluster: Cluster, admin: AIOKafkaAdminClient,
) -> None:
    """ensure_topics gives every service topic and its .dlq 3 replicas on the cluster and ISR 2."""
    await ensure_topics(cluster.bootstrap)
    names = [*TOPICS, *(f"{t}.dlq" for t in TOPICS)]
    everywhere = {p: ([1, 2, 3], [1, 2, 3]) for p in range(PARTITIONS)}

    async def placement() -> dict[str, dict[int, tuple[list[int], list[int]]]]:
        return {name: await replicas(admin, name) for name in names}

    await wait_until(placement, lambda found: found == {name: everywhere for name in names},
                     "every topic on 3 in-sync replicas", timeout=60)
    expected = {name: (0, [("min.insync.replicas", "2")]) for name in names}
    await wait_until(lambda: min_isr(admin, names), lambda found: found == expected,
                     "min.insync.replicas of every topic", timeout=30)


async def min_isr(
    admin: AIOKafkaAdminClient, names: list[str],
) -> dict[str, tuple[int, list[tuple[str, str]]]]:
    """``{topic: (error code, [("min.insync.replicas", value)])}`` from DescribeConfigs."""
    (response,) = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, {"min.insync.replicas": None})
         for name in names]
    )
    return {name: (code, [(key, value) for key, value, *_ in entries])
            for code, _, _, name, entries in response.resources}


async def test_records_produced_while_a_broker_stops_are_consumed_exactly_once(
    cluster: Cluster, admin: AIOKafkaAdminClient,
) -> None:
    """Every record the services' producer sends around a broker's stop is consumed once."""
    topic = await new_topic(admin, "cluster-stop")
    producer = await new_producer(cluster.bootstrap)
    sent: list[int] = []

    async def produce(count: int) -> None:
        futures = []
        for _ in range(count):
            sent.append(len(sent))
            futures.append(await producer.send(topic, json.dumps({"i": sent[-1]}).encode()))
        await asyncio.gather(*futures)

    try:
        await produce(300)
        stopping = asyncio.create_task(asyncio.to_thread(cluster.stop, 2))
        while not stopping.done():  # about 70 records a second until the node has exited
            await produce(10)
            await asyncio.sleep(0.1)
        await stopping
        during = len(sent) - 300
        await produce(300)
    finally:
        await producer.stop()
    assert during > 0

    consumed: list[int] = []

    async def handler(event: Event, record: ConsumerRecord[bytes, bytes]) -> None:
        consumed.append(event["i"])

    consumer = new_event_consumer(topic, handler, bootstrap=cluster.bootstrap,
                                  group_id=f"cluster-{uuid.uuid4().hex[:12]}")
    await consumer.start()
    running = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: len(consumed), lambda n: n >= len(sent),
                         f"{len(sent)} records consumed", timeout=120)
    finally:
        await consumer.stop()
        await running
    assert sorted(consumed) == sent
    assert sum((await end_offsets(cluster.bootstrap, topic)).values()) == len(sent)


async def test_acks_all_write_with_two_brokers_down_fails_with_not_enough_replicas(
    cluster: Cluster, admin: AIOKafkaAdminClient, caplog: pytest.LogCaptureFixture,
) -> None:
    """With one of three brokers left an acks=all write is refused, never silently kept."""
    topic = await new_topic(admin, "cluster-two-down")
    cluster.stop(2)
    cluster.stop(3)
    survivor = cluster.address(1)
    plain = AIOKafkaProducer(bootstrap_servers=survivor, acks="all", request_timeout_ms=5000)
    await plain.start()
    try:
        with pytest.raises(NotEnoughReplicasError):
            await plain.send_and_wait(topic, b'{"i": -1}', partition=0)
    finally:
        await plain.stop()

    caplog.clear()
    caplog.set_level(logging.WARNING, logger="aiokafka.producer.sender")
    producer = await new_producer(survivor)
    try:
        pending = await producer.send(topic, b'{"i": 0}', partition=0)
        done, _ = await asyncio.wait({pending}, timeout=10)
        assert not done
        assert any("NotEnoughReplicasError" in r.getMessage() for r in caplog.records)
        cluster.start(2)
        await asyncio.wait_for(pending, READY_SECONDS)
    finally:
        await producer.stop()
    assert await end_offsets(survivor, topic) == {0: 1, 1: 0, 2: 0}
