"""Budgets, tool policy, sandbox limits and fault switches give their real outcomes and series."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.common.kafka import partition_ids
from tests import live
from tests.services import kit

pytestmark = pytest.mark.usefixtures("services")


@pytest.fixture
def clean_faults() -> Iterator[None]:
    """Turn every fault switch off after the test, whatever happened."""
    yield
    for base in (kit.GATEWAY, kit.WORKER, kit.EXECUTOR):
        kit.reset_faults(base)


def _prom_sum(expr: str) -> float:
    value = live.prom_value(f"sum({expr})")
    return value if value is not None else -1.0


async def test_over_budget_message_is_refused_and_counted_exactly() -> None:
    """With a 1-token budget the 2nd message is refused; Prometheus matches Redis exactly."""
    tenant, key = kit.create_tenant(token_budget=1, persona_token_budget=1)
    session = kit.create_session(key)
    first = kit.post_message(key, session, "Hello there")
    assert kit.reply_to(key, session, first["message_id"])["status"] == "answered"
    second = kit.post_message(key, session, "Hello again")
    refused = kit.reply_to(key, session, second["message_id"])
    assert refused["status"] == "over_budget"
    assert "budget is exhausted" in refused["content"]
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        raw = await client.get(f"budget:{tenant}:{time.strftime('%Y%m%d', time.gmtime())}")
        used = int(raw or 0)
    finally:
        await client.aclose()
    assert used > 1
    live.wait_until(lambda: _prom_sum(f'budget_limit_reached_total{{tenant="{tenant}"}}'),
                    lambda v: v == 1, 90, "budget_limit_reached_total == 1", interval=2)
    live.wait_until(lambda: _prom_sum(f'budget_tokens_consumed_total{{tenant="{tenant}"}}'),
                    lambda v: v == used, 90, f"budget_tokens_consumed_total == {used}",
                    interval=2)


def test_tool_outside_the_allowlist_is_blocked_and_counted() -> None:
    """A tenant without ``calculate`` gets a blocked reply and one policy_blocked_total."""
    tenant, key = kit.create_tenant(allowed_tools=["stats"])
    session = kit.create_session(key)
    sent = kit.post_message(key, session, "calculate 1+1")
    reply = kit.reply_to(key, session, sent["message_id"])
    assert "not allowed" in reply["content"]
    live.wait_until(
        lambda: _prom_sum(f'policy_blocked_total{{tenant="{tenant}",tool_name="calculate"}}'),
        lambda v: v == 1, 90, "policy_blocked_total == 1", interval=2,
    )


@pytest.mark.parametrize(
    ("tool", "arguments", "limits", "status", "error_type"),
    [
        ("calculate", {"expression": "6*7"}, {}, "ok", None),
        ("calculate", {"expression": "1/0"}, {}, "error", "tool_error"),
        ("calculate", {"expression": "__import__('os')"}, {}, "error", "tool_error"),
        ("primes", {"limit": 3000000}, {"wall_seconds": 0.5}, "error", "tool_timeout"),
        ("primes", {"limit": 3000000}, {"cpu_seconds": 1}, "error", "limit_exceeded"),
        ("primes", {"limit": 500000000, "method": "sieve"}, {}, "error", "limit_exceeded"),
    ],
)
async def test_sandbox_outcomes_have_distinct_error_types(
    tool: str, arguments: dict[str, Any], limits: dict[str, float], status: str,
    error_type: str | None,
) -> None:
    """Each sandbox outcome (ok, tool error, timeout, CPU and memory limit) is told apart."""
    tenant, _ = kit.create_tenant(allowed_tools=["calculate", "stats", "primes"])
    correlation = str(uuid.uuid4())
    result = await kit.tool_result(correlation, {
        "correlation_id": correlation, "tenant_id": tenant, "tool_name": tool,
        "arguments": arguments, "limits": limits,
    })
    assert (result["status"], result["error_type"]) == (status, error_type), result
    assert result["cpu_seconds"] > 0 and result["memory_bytes"] > 0
    if status == "ok":
        assert result["output"] == 42


async def test_crashing_tool_is_retried_then_dead_lettered(clean_faults: None) -> None:
    """With the failure marker the child raises on every attempt: 3 runs, a result, the DLQ."""
    marker = f"#crash-{uuid.uuid4().hex[:8]}"
    kit.set_faults(kit.EXECUTOR, tool_failure_marker=marker)
    tenant, _ = kit.create_tenant()
    correlation = str(uuid.uuid4())
    result = await kit.tool_result(correlation, {
        "correlation_id": correlation, "tenant_id": tenant, "tool_name": "stats",
        "arguments": {"text": f"boom {marker}"},
    })
    assert (result["status"], result["error_type"]) == ("error", "tool_crashed")
    assert "injected tool failure" in result["error_message"]
    record = await kit.find_record("tool.requests.dlq", correlation.encode())
    headers = kit.headers_of(record)
    assert headers["dlq.error.type"] == "tool_crashed"
    assert headers["dlq.attempts"] == "3"


def test_gateway_5xx_ratio_fails_exactly_the_predicted_requests(clean_faults: None) -> None:
    """Ratio 0.5 fails the 2nd and 4th of four requests with a real 500, and both are counted
    under their route in http_requests_total (the switch answers before routing)."""
    series = ('http_requests_total{job="gateway",method="POST",endpoint="/v1/sessions",'
              'status="500"}')
    before = live.prom_total(series)
    _, key = kit.create_tenant()
    kit.set_faults(kit.GATEWAY, gateway_5xx_ratio=0.5)
    statuses = [
        httpx.post(f"{kit.GATEWAY}/v1/sessions", json={}, headers=kit.auth(key)).status_code
        for _ in range(4)
    ]
    assert statuses == [201, 500, 201, 500]
    live.wait_until(lambda: live.prom_total(series) - before, lambda grown: grown == 2,
                    timeout=60, what=f"2 more {series}")


async def test_poison_message_is_retried_then_dead_lettered(clean_faults: None) -> None:
    """A message carrying the poison marker ends in conversation.events.dlq after 3 attempts."""
    marker = f"#poison-{uuid.uuid4().hex[:8]}"
    kit.set_faults(kit.WORKER, poison_marker=marker)
    _, key = kit.create_tenant()
    session = kit.create_session(key)
    kit.post_message(key, session, f"hello {marker}")
    record = await kit.find_record("conversation.events.dlq", session.encode())
    headers = kit.headers_of(record)
    assert headers["dlq.error.type"] == "poison_message"
    assert headers["dlq.attempts"] == "3"
    assert httpx.get(f"{kit.WORKER}/readyz").status_code == 200


async def _worker_lag() -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=live.KAFKA)
    consumer = AIOKafkaConsumer(bootstrap_servers=live.KAFKA, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets("conversation-worker")
        tps = [TopicPartition("conversation.events", p)
               for p in await partition_ids(live.KAFKA, "conversation.events")]
        ends = await consumer.end_offsets(tps)
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


async def test_stuck_consumer_builds_lag_and_recovers(clean_faults: None) -> None:
    """While ``consumer_stuck`` is on, a posted message stays uncommitted; off, it is answered."""
    _, key = kit.create_tenant()
    session = kit.create_session(key)
    kit.set_faults(kit.WORKER, consumer_stuck=True)
    sent = kit.post_message(key, session, "Are you there?")
    deadline = time.monotonic() + 60
    while await _worker_lag() < 1:
        assert time.monotonic() < deadline, "no lag while the consumer is stuck"
    assert not [m for m in kit.messages(key, session) if m["reply_to"] == sent["message_id"]]
    kit.set_faults(kit.WORKER, consumer_stuck=False)
    assert kit.reply_to(key, session, sent["message_id"])["status"] == "answered"


def test_slm_delay_is_real_latency_in_the_chat_span(clean_faults: None) -> None:
    """With ``slm_delay_seconds=2`` the kept trace's ``chat`` span lasts at least 2 s."""
    kit.set_faults(kit.WORKER, slm_delay_seconds=2)
    _, key = kit.create_tenant()
    session = kit.create_session(key)
    sent = kit.post_message(key, session, "Tell me something", debug=True)
    kit.reply_to(key, session, sent["message_id"])
    spans = live.wait_until(
        lambda: [s for s in live.jaeger_trace(sent["trace_id"])
                 if s["operationName"].startswith("chat ")],
        bool, 90, "the chat span in Jaeger", interval=2,
    )
    assert spans[0]["duration"] >= 2_000_000
