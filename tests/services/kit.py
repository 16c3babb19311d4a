"""Clients the service tests share: the gateway API, fault switches and Kafka topics.

Everything talks to the real services and the real broker on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.common.kafka import partition_ids
from tests import live

GATEWAY = "http://127.0.0.1:8010"
WORKER = "http://127.0.0.1:8011"
EXECUTOR = "http://127.0.0.1:8012"


def create_tenant(**policy: Any) -> tuple[str, str]:
    """Create a tenant with a unique id and ``policy`` overrides; return (tenant id, API key)."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    answer = httpx.post(f"{GATEWAY}/admin/tenants", json={"tenant_id": tenant, **policy})
    answer.raise_for_status()
    return tenant, str(answer.json()["api_key"])


def auth(api_key: str) -> dict[str, str]:
    """The Authorization header of ``api_key``."""
    return {"Authorization": f"Bearer {api_key}"}


def create_session(api_key: str, persona_id: str = "default") -> str:
    """Open a session; return its id."""
    answer = httpx.post(f"{GATEWAY}/v1/sessions", json={"persona_id": persona_id},
                        headers=auth(api_key))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["session_id"])


def post_message(
    api_key: str, session_id: str, text: str, *, debug: bool = False
) -> dict[str, Any]:
    """Post a message (optionally always-kept); return the 202 body."""
    headers = auth(api_key) | ({"X-Soma-Debug-Trace": "1"} if debug else {})
    answer = httpx.post(f"{GATEWAY}/v1/sessions/{session_id}/messages", json={"text": text},
                        headers=headers)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def messages(api_key: str, session_id: str) -> list[dict[str, Any]]:
    """The session's stored messages, oldest first."""
    answer = httpx.get(f"{GATEWAY}/v1/sessions/{session_id}/messages", headers=auth(api_key))
    assert answer.status_code == 200, answer.text
    return list(answer.json()["messages"])


def reply_to(api_key: str, session_id: str, message_id: str, timeout: float = 60) -> dict[str, Any]:
    """Wait for the stored assistant reply to ``message_id``; return it."""
    found = live.wait_until(
        lambda: [m for m in messages(api_key, session_id) if m["reply_to"] == message_id],
        bool, timeout, f"the reply to {message_id}",
    )
    return found[0]


def set_faults(base: str, **switches: Any) -> dict[str, Any]:
    """Set fault switches on the service at ``base``; return the switches in force."""
    answer = httpx.post(f"{base}/admin/faults", json=switches)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def reset_faults(base: str) -> None:
    """Turn every fault of the service at ``base`` off."""
    httpx.delete(f"{base}/admin/faults").raise_for_status()


async def produce(topic: str, value: bytes, key: bytes,
                  headers: list[tuple[str, bytes]] | None = None) -> None:
    """Produce one raw record (no trace context unless in ``headers``); wait for the ack."""
    producer = AIOKafkaProducer(bootstrap_servers=live.KAFKA, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def find_record(topic: str, key: bytes, timeout: float = 60) -> ConsumerRecord[bytes, bytes]:
    """Read ``topic`` from the beginning until a record with ``key`` arrives; return it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=live.KAFKA, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in await partition_ids(live.KAFKA, topic)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    if record.key == key:
                        return record
        raise AssertionError(f"no record with key {key!r} on {topic} within {timeout:.0f}s")
    finally:
        await consumer.stop()


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    """The record's headers as text (the last value of a repeated key wins)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in record.headers}


async def tool_result(correlation_id: str, request: dict[str, Any],
                      timeout: float = 60) -> dict[str, Any]:
    """Send ``request`` to ``tool.requests`` and return the result with ``correlation_id``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=live.KAFKA, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition("tool.results", p)
               for p in await partition_ids(live.KAFKA, "tool.results")]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        await produce("tool.requests", json.dumps(request).encode(), correlation_id.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=500), timeout)
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    if event.get("correlation_id") == correlation_id:
                        return dict(event)
        raise AssertionError(f"no tool result for {correlation_id} within {timeout:.0f}s")
    finally:
        await consumer.stop()
