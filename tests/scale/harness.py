"""What the scale tests drive and read: an open-loop workload, SIGKILLs, topics, telemetry.

* :func:`open_load`: posts messages through the gateway at a fixed rate (open loop: a slow
  reply never slows the next post) over many sessions, so every partition of
  ``conversation.events``, hence both replicas of each consumer, gets work; records each post's
  HTTP status and accepted message id.
* :func:`sigkill_and_hold`: ``kill -9`` of a component's process (the pid supervisor reports;
  every program ``exec``\\ s, so it is the collector, the broker's JVM or the service itself).
  Supervisor restarts a program that died unexpectedly (``autorestart=unexpected``) within a
  second, so the replacement is then stopped through supervisor until the test starts the
  component again: the kill loses what the process held, and the component stays down for the
  test's outage window, as a crashed pod waits out its restart back-off.
* :func:`outcome`: what became of accepted messages: replies stored in PostgreSQL, reply records
  on ``conversation.replies`` and dead-lettered records on ``conversation.events.dlq``, both read
  from offsets taken before the workload on every broker of the cluster.
* :func:`collector_total`: a counter of a collector's own telemetry, read from its port (the
  agent's 8888, each gateway collector's own), not through Prometheus, so it is exact at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from services.common.kafka import CONVERSATION_EVENTS, CONVERSATION_REPLIES, partition_ids
from stack.components import KAFKA_CLUSTER_BOOTSTRAP, REPLICAS, SERVICES
from stack.stackctl import stack_paths
from tests import live
from tests.services import kit

BOOTSTRAP = KAFKA_CLUSTER_BOOTSTRAP
POSTGRES = "postgresql://postgres@127.0.0.1:5432/somaagent"
MESSAGES = "/v1/sessions/{session_id}/messages"
DLQ = f"{CONVERSATION_EVENTS}.dlq"
TOOL_TEXT = "calculate 6*7"
HEALTH_PORTS = {name: port for name, _, port in SERVICES}
#: Each consumer service's replicas: the first on its default port, the second on REPLICAS'.
REPLICA_URLS = {
    name: (f"http://127.0.0.1:{HEALTH_PORTS[name]}", f"http://127.0.0.1:{port}")
    for name, port in REPLICAS.items()
}
WORKERS = REPLICA_URLS["conversation-worker"]


def _supervisorctl(*args: str) -> str:
    """Run supervisorctl against the stack's supervisord; return its output."""
    conf = stack_paths().state / "supervisord.conf"
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args],
        capture_output=True, text=True, check=False,
    )
    return done.stdout + done.stderr


def process_state(name: str) -> str:
    """Supervisor's state of program ``name`` (RUNNING, STARTING, BACKOFF, STOPPED, ...)."""
    words = _supervisorctl("status", name).split()
    return words[1] if len(words) > 1 else "UNKNOWN"


def process_pid(name: str) -> int:
    """The pid of program ``name``'s process (0 when it is not running)."""
    out = _supervisorctl("pid", name).strip()
    return int(out) if out.isdigit() else 0


def sigkill_and_hold(name: str) -> int:
    """SIGKILL ``name``'s process, then keep it down (stop supervisor's restart); return the
    killed pid."""
    victim = process_pid(name)
    assert victim, f"{name} is not running ({process_state(name)})"
    os.kill(victim, signal.SIGKILL)
    live.wait_until(lambda: process_pid(name), lambda pid: pid != victim, 30,
                    f"supervisor to reap the killed {name} (pid {victim})", interval=0.1)

    def held() -> bool:
        _supervisorctl("stop", name)  # a no-op error between EXITED and the restart: retried
        # Not a restart scheduled from EXITED: the state holds still for a second.
        return live.settled(lambda: process_state(name), quiet=1, timeout=10,
                            what=f"{name}'s state holding still") == "STOPPED"

    live.wait_until(held, bool, 60, f"{name} held down after its SIGKILL", interval=0.2)
    return victim


def set_poison_marker(marker: str) -> None:
    """Make every conversation-worker replica fail on messages containing ``marker``."""
    for base in WORKERS:
        kit.set_faults(base, poison_marker=marker)


def reset_all_faults() -> None:
    """Turn off every fault switch on the gateway and on every consumer replica."""
    for base in (kit.GATEWAY, *(url for urls in REPLICA_URLS.values() for url in urls)):
        kit.reset_faults(base)


@dataclass
class Load:
    """What an open-loop workload posted and what the gateway answered."""

    sessions: int
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)  # message ids of the 202 answers
    poison: set[str] = field(default_factory=set)  # accepted ids that carry the marker
    tools: int = 0  # accepted tool calls (calculate 6*7)
    errors: list[str] = field(default_factory=list)  # posts that got no HTTP answer
    slowest: float = 0.0


async def open_load(seconds: float, rate: float, sessions: int, marker: str,
                    poison_every: int) -> Load:
    """Post ``rate`` messages a second for ``seconds`` over ``sessions`` sessions of a fresh
    tenant: every third one a tool call, every ``poison_every``-th one poisoned with
    ``marker``, the rest plain; each asks for a one-token reply."""
    _, key = kit.create_tenant(rate_limit_per_minute=1_000_000, token_budget=10**9,
                               persona_token_budget=10**9)
    ids = [kit.create_session(key) for _ in range(sessions)]
    load = Load(sessions=sessions)
    start = time.monotonic()

    async def post(client: httpx.AsyncClient, i: int) -> None:
        await asyncio.sleep(max(start + i / rate - time.monotonic(), 0))
        if i % poison_every == poison_every - 1:
            text = f"hello {i} {marker}"
        elif i % 3 == 1:
            text = TOOL_TEXT
        else:
            text = f"hello number {i}"
        sent = time.monotonic()
        try:
            answer = await client.post(
                f"{kit.GATEWAY}{MESSAGES.format(session_id=ids[i % sessions])}",
                json={"text": text, "max_reply_tokens": 1}, headers=kit.auth(key),
            )
        except httpx.HTTPError as exc:
            load.errors.append(f"post {i}: {type(exc).__name__}: {exc}")
            return
        load.slowest = max(load.slowest, time.monotonic() - sent)
        load.statuses[answer.status_code] += 1
        if answer.status_code == 202:
            message_id = str(answer.json()["message_id"])
            load.accepted.append(message_id)
            if marker in text:
                load.poison.add(message_id)
            load.tools += text == TOOL_TEXT

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(post(client, i) for i in range(int(seconds * rate))))
    return load


async def end_offsets(topic: str) -> dict[int, int]:
    """The end offset of every partition of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partition_ids(BOOTSTRAP, topic)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def records_since(topic: str, start: dict[int, int]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the offsets ``start`` up to the current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in start]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"{topic} not read to its end within 60 s"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += records
        return out
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Outcome:
    """What became of a workload's accepted messages."""

    stored: Counter[str]  # message id -> assistant rows in PostgreSQL
    published: Counter[str]  # message id -> records on conversation.replies
    dead: Counter[str]  # message id -> records on conversation.events.dlq

    def lost(self, accepted: list[str]) -> set[str]:
        """Accepted ids with neither a reply nor a dead-lettered record."""
        return set(accepted) - set(self.stored) - set(self.dead)


async def stored_replies(accepted: list[str]) -> Counter[str]:
    """Assistant rows stored in PostgreSQL per accepted message id."""
    conn = await asyncpg.connect(POSTGRES)
    try:
        rows = await conn.fetch(
            "SELECT reply_to FROM messages WHERE role = 'assistant' AND reply_to = ANY($1)",
            [uuid.UUID(m) for m in accepted],
        )
    finally:
        await conn.close()
    return Counter(str(r["reply_to"]) for r in rows)


def _field(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    """Field ``name`` of a record's JSON object (None when it is not one)."""
    try:
        value = json.loads(record.value or b"")
    except ValueError:
        return None
    return str(value.get(name)) if isinstance(value, dict) else None


async def outcome(accepted: list[str], replies_start: dict[int, int],
                  dlq_start: dict[int, int], timeout: float) -> Outcome:
    """Wait until every accepted message is replied to or dead-lettered (up to ``timeout``
    seconds); return what the store and both topics hold for them."""
    ours = set(accepted)

    async def read() -> Outcome:
        stored = await stored_replies(accepted)
        published = Counter(m for r in await records_since(CONVERSATION_REPLIES, replies_start)
                            if (m := _field(r, "reply_to")) in ours)
        dead = Counter(m for r in await records_since(DLQ, dlq_start)
                       if (m := _field(r, "message_id")) in ours)
        return Outcome(stored, published, dead)

    deadline = time.monotonic() + timeout
    seen = await read()
    while seen.lost(accepted) and time.monotonic() < deadline:
        await asyncio.sleep(2)
        seen = await read()
    # Anything still in flight (a redelivered record's second reply) lands before the store
    # and both topics hold still for 10 s (a retry's time); at most a minute more.
    for _ in range(6):
        await asyncio.sleep(10)
        previous, seen = seen, await read()
        if seen == previous:
            break
    return seen


def gateway_posts_by_status() -> dict[str, float]:
    """``http_requests_total`` of the gateway's message posts, per status (live series)."""
    selector = (f'http_requests_total{{job="gateway",method="POST",'
                f'endpoint="{MESSAGES}"}}')
    rows = live.prom_query(f"sum by (status) (last_over_time({selector}[15s]))")
    return {r["metric"]["status"]: float(r["value"][1]) for r in rows}


def settled_posts_by_status() -> dict[str, float]:
    """:func:`gateway_posts_by_status` once two reads 20 s apart agree (a count takes the SDK's
    5 s export, the agent's 5 s spanmetrics flush and a 5 s scrape to reach Prometheus)."""
    return live.settled(gateway_posts_by_status, 20, 300,
                        "the gateway's http_requests_total to stop moving")


def growth(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Per-key growth from ``before`` to ``after``, zero growths left out."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def collector_total(port: int, metric: str, **labels: str) -> float:
    """The sum of counter ``metric`` (its exposition name, e.g. ending in ``_total``) over the
    samples with ``labels`` on the collector telemetry endpoint at ``port``."""
    text = live.get_text(f"http://127.0.0.1:{port}/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == metric and labels.items() <= sample.labels.items()
    )
