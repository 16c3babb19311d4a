"""Exact numbers: a known workload through the real services moves every series exactly.

The workload runs gateway -> Kafka -> worker (SLM, budgets) -> tool executor with a known mix
of outcomes; each spec series must then have grown by exactly the number of operations, with
the spec's label keys and no other. Counter series created lazily appear at their first
increment, so a series absent before the workload counts as 0 (the raw values are compared,
not ``increase()``, which cannot see a series' first step).
"""

from __future__ import annotations

import asyncio
import operator
import time
import uuid
from collections import Counter
from functools import partial
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from services.conversation_worker.intent import classify
from tests import live
from tests.services import kit

pytestmark = pytest.mark.usefixtures("services")

MESSAGES = "/v1/sessions/{session_id}/messages"
SLM_MODEL = "smollm2-135m-instruct"
ATTEMPTS = 3  # services.common.kafka.RETRY_POLICY.max_attempts
PLAIN, TOOL_OK, TOOL_ERROR, POISON = 8, 4, 3, 2


def _growth(expr: str, before: float) -> float:
    """How much the sum of ``expr`` grew since it was ``before``."""
    return live.prom_total(expr) - before


def _sel(metric: str, **labels: str) -> str:
    """The PromQL selector of ``metric`` with exactly ``labels``."""
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _label_keys(metric: str) -> set[frozenset[str]]:
    """The distinct label-key sets of ``metric``'s series in Prometheus."""
    return {frozenset(r["metric"]) - {"__name__"} for r in live.prom_query(metric)}


def _quiet(series: dict[str, str]) -> dict[str, float]:
    """The values of ``series`` once none has changed for 15 s (earlier tests' messages, still
    retried or in flight, must not count in this workload's deltas)."""
    values = {name: live.prom_total(expr) for name, expr in series.items()}
    since = time.monotonic()

    def settled() -> bool:
        nonlocal values, since
        now = {name: live.prom_total(expr) for name, expr in series.items()}
        if now != values:
            values, since = now, time.monotonic()
        return time.monotonic() - since >= 15

    live.wait_until(settled, bool, timeout=180, what="the spec series to stop moving", interval=2)
    return values


async def _wait_replies(message_ids: list[str]) -> None:
    """Wait, in PostgreSQL, until every message has its stored reply."""
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/somaagent")
    try:
        ids = [uuid.UUID(m) for m in message_ids]

        async def answered() -> int:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM messages WHERE role = 'assistant' AND reply_to = ANY($1)",
                    ids,
                )
            )

        for _ in range(600):  # 5 minutes
            if await answered() == len(ids):
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"{await answered()} of {len(ids)} replies stored after 5 minutes")
    finally:
        await conn.close()


@pytest.mark.timeout(900)
async def test_known_workload_moves_every_series_by_exactly_its_count() -> None:
    """Counts of requests, outcomes, tokens and histograms equal the workload's, per series."""
    for base in (kit.GATEWAY, kit.WORKER, kit.EXECUTOR):
        kit.reset_faults(base)
    marker = f"#poison-{uuid.uuid4().hex[:8]}"
    kit.set_faults(kit.WORKER, poison_marker=marker)
    try:
        await _workload_and_checks(marker)
    finally:
        kit.reset_faults(kit.WORKER)


async def _workload_and_checks(marker: str) -> None:
    texts = (
        [f"hello number {i}" for i in range(PLAIN)]
        + ["calculate 6*7"] * TOOL_OK
        + ["calculate 1/0"] * TOOL_ERROR
    )
    intents = Counter(classify(t).name for t in [*texts, "hello", "hello again", "calculate 2+2"])

    gw, worker = {"job": "gateway"}, {"job": "conversation-worker"}
    tools = {"job": "tool-executor"}
    msg = {"method": "POST", "endpoint": MESSAGES}
    calc = {**tools, "tool_name": "calculate"}
    series = {
        "sessions": _sel("sessions_created_total", **gw),
        "auth_success": _sel("auth_attempts_total", **gw, result="success"),
        "auth_missing": _sel("auth_attempts_total", **gw, result="missing"),
        "auth_failure": _sel("auth_attempts_total", **gw, result="failure"),
        "policy_allow": _sel("policy_evaluations_total", **gw, result="allow"),
        "http_202": _sel("http_requests_total", **gw, **msg, status="202"),
        "http_400": _sel("http_requests_total", **gw, **msg, status="400"),
        "http_401": _sel("http_requests_total", **gw, **msg, status="401"),
        "http_sessions": _sel(
            "http_requests_total", **gw, method="POST", endpoint="/v1/sessions", status="201"
        ),
        "http_duration": _sel("http_request_duration_seconds_count", **gw, **msg),
        "conversations": _sel("conversation_requests_total", **worker),
        "conversation_duration": _sel("conversation_processing_duration_seconds_count", **worker),
        "poison_errors": _sel("conversation_errors_total", **worker, error_type="poison_message"),
        "budget_errors": _sel("conversation_errors_total", **worker, error_type="budget_exhausted"),
        "slm": _sel("slm_requests_total", **worker, model=SLM_MODEL),
        "slm_duration": _sel("slm_latency_seconds_count", **worker, model=SLM_MODEL),
        "slm_tokens": _sel("slm_tokens_total", **worker, model=SLM_MODEL),
        "tool_success": _sel("tool_execution_total", **calc, status="success"),
        "tool_failure": _sel("tool_execution_total", **calc, status="failure"),
        "tool_errors": _sel("tool_execution_failures_total", **calc, error_type="tool_error"),
        "tool_blocked": _sel("tool_execution_failures_total", **calc, error_type="policy_blocked"),
        "tool_duration": _sel("tool_execution_duration_seconds_count", **calc),
        "tool_memory": _sel("resource_usage_memory_bytes_count", **calc),
        "dlq": _sel(
            "dlq_events_total",
            **worker,
            source_topic="conversation.events",
            error_type="poison_message",
        ),
        **{
            f"intent_{name}": _sel("intent_classification_total", **worker, intent=name)
            for name in intents
        },
    }
    before = _quiet(series)

    tenant, key = kit.create_tenant(rate_limit_per_minute=1000)
    frugal, frugal_key = kit.create_tenant(
        rate_limit_per_minute=1000, token_budget=1, persona_token_budget=1
    )
    restricted, restricted_key = kit.create_tenant(allowed_tools=["stats"])
    session, frugal_session = kit.create_session(key), kit.create_session(frugal_key)
    restricted_session = kit.create_session(restricted_key)
    blocked = kit.post_message(restricted_key, restricted_session, "calculate 2+2")["message_id"]
    sent = [kit.post_message(key, session, t)["message_id"] for t in texts]
    for i in range(POISON):
        kit.post_message(key, session, f"hello {i} {marker}")
    first = kit.post_message(frugal_key, frugal_session, "hello")["message_id"]
    await _wait_replies([first])
    refused = kit.post_message(frugal_key, frugal_session, "hello again")["message_id"]
    bad: list[tuple[dict[str, str], bytes, int]] = [
        (kit.auth(key) | {"Content-Type": "application/json"}, b"{not json", 400),
        ({"Content-Type": "application/json"}, b'{"text": "hi"}', 401),
        (
            {"Authorization": "Bearer wrong", "Content-Type": "application/json"},
            b'{"text": "hi"}',
            401,
        ),
    ]
    for headers, body, status in bad:
        url = f"{kit.GATEWAY}{MESSAGES.format(session_id=session)}"
        assert httpx.post(url, content=body, headers=headers).status_code == status
    await _wait_replies([*sent, refused, blocked])

    posts = len(texts) + POISON + 3  # the tenant's, the frugal tenant's two, the blocked one
    handled = len(texts) + 3  # conversations that ran to a reply
    expected: dict[str, float] = {
        "sessions": 3,
        "auth_success": 3 + posts + 1,
        "auth_missing": 1,
        "auth_failure": 1,
        "policy_allow": 3 + posts,
        "http_202": posts,
        "http_400": 1,
        "http_401": 2,
        "http_sessions": 3,
        "http_duration": posts + 3,
        "conversations": handled + POISON * ATTEMPTS,
        "conversation_duration": handled + POISON * ATTEMPTS,
        "poison_errors": POISON * ATTEMPTS,
        "budget_errors": 1,
        "slm": handled - 1,  # the over-budget message never reaches the SLM
        "slm_duration": handled - 1,
        "tool_success": TOOL_OK,
        "tool_failure": TOOL_ERROR + 1,
        "tool_errors": TOOL_ERROR,
        "tool_blocked": 1,
        "tool_duration": TOOL_OK + TOOL_ERROR + 1,
        "tool_memory": TOOL_OK + TOOL_ERROR,  # a blocked tool never reaches the sandbox
        "dlq": POISON,
        **{f"intent_{name}": count for name, count in intents.items()},
    }
    for name, count in expected.items():
        live.wait_until(
            partial(_growth, series[name], before[name]),
            partial(operator.eq, count),
            timeout=90,
            what=f"{series[name]} to grow by {count}",
            interval=2,
        )

    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        used: dict[str, Any] = {}
        for who in (tenant, frugal, restricted):
            day = time.strftime("%Y%m%d", time.gmtime())
            used[who] = int(await client.get(f"budget:{who}:{day}") or 0)
    finally:
        await client.aclose()
    for who in (tenant, frugal, restricted):
        live.wait_until(
            partial(live.prom_total, f'budget_tokens_consumed_total{{tenant="{who}"}}'),
            partial(operator.eq, used[who]),
            90,
            f"tokens of {who} == {used[who]}",
        )
    assert live.prom_total(series["slm_tokens"]) - before["slm_tokens"] == sum(used.values())
    assert live.prom_total(
        f'budget_limit_reached_total{{tenant="{frugal}",persona_id="default"}}') == 1
    assert live.prom_total(f'budget_limit_reached_total{{tenant="{tenant}"}}') == 0
    assert live.prom_total(
        f'policy_blocked_total{{tenant="{restricted}",tool_name="calculate"}}') == 1
    assert live.prom_total('sandbox_active_executions{job="tool-executor"}') == 0


@pytest.mark.parametrize(
    ("metric", "labels"),
    [
        ("http_requests_total", {"method", "endpoint", "status"}),
        ("http_request_duration_seconds_bucket", {"method", "endpoint", "le"}),
        ("sessions_created_total", set()),
        ("auth_attempts_total", {"result"}),
        ("policy_evaluations_total", {"result"}),
        ("conversation_requests_total", set()),
        ("conversation_processing_duration_seconds_bucket", {"le"}),
        ("conversation_errors_total", {"error_type"}),
        ("slm_requests_total", {"model"}),
        ("slm_latency_seconds_bucket", {"model", "le"}),
        ("slm_tokens_total", {"model", "type"}),
        ("budget_tokens_consumed_total", {"tenant", "persona_id"}),
        ("budget_limit_reached_total", {"tenant", "persona_id"}),
        ("intent_classification_total", {"intent"}),
        ("tool_execution_total", {"tool_name", "status"}),
        ("tool_execution_duration_seconds_bucket", {"tool_name", "le"}),
        ("tool_execution_failures_total", {"tool_name", "error_type"}),
        ("policy_blocked_total", {"tool_name", "tenant"}),
        ("sandbox_active_executions", set()),
        ("resource_usage_cpu_seconds_total", {"tool_name"}),
        ("resource_usage_memory_bytes_bucket", {"tool_name", "le"}),
        ("kafka_consumer_lag", {"group", "topic"}),
    ],
)
def test_every_spec_series_has_exactly_the_spec_label_keys(metric: str, labels: set[str]) -> None:
    """Each spec series exists and carries the spec's labels plus job and instance, no more."""
    keys = live.wait_until(lambda: _label_keys(metric), bool, 90, f"series of {metric}")
    allowed = labels | {"job", "instance"}
    assert all(k <= allowed and labels <= k for k in keys), (metric, keys)
