"""Logs: every service log line reaches VictoriaLogs with service.name, severity and trace_id.

A workload with a unique marker produces known log lines on the three services, each inside a
trace: an OK tool message (the worker's httpx INFO line for the SLM call), a tool crash
(``tool_failure_marker``: the executor's two retry WARNs and its dead-letter WARN, plus the
worker's SLM INFO), a poison message (``poison_marker``: the worker's two retry WARNs and its
dead-letter WARN) and a failed policy evaluation (the tenant's rate-limit counter in Redis is
made a list, so ``INCR`` fails: the gateway logs ERROR "policy evaluation failed" and answers
503). VictoriaLogs stores OTLP log records with the fields ``service.name``,
``severity_text``/``severity_number``, ``trace_id`` and ``span_id`` (the stream is
``{service.name=...}``).

For each trace the records in VictoriaLogs must be exactly the expected ones per service and
severity, and exactly the lines the service wrote to its own stdout log (JSON, with the same
trace id) in the stack's log folder. Every ERROR record of the test's time window that has a
trace id must resolve to a trace in Jaeger (the tail sampler keeps every error trace).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import pytest
import redis

from stack.stackctl import stack_paths
from tests import live
from tests.pipeline.test_sampling import faults_in_force, wait_for_no_faults
from tests.services import kit

pytestmark = pytest.mark.usefixtures("services")

SERVICES = ("gateway", "conversation-worker", "tool-executor")
OTLP_SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR",
                 "CRITICAL": "FATAL"}
SEVERITY_NUMBER = {"DEBUG": "5", "INFO": "9", "WARN": "13", "ERROR": "17", "FATAL": "21"}


def _stdout_lines(trace_ids: set[str]) -> list[dict[str, Any]]:
    """The services' own JSON log lines (supervisor or fixture log files) of ``trace_ids``."""
    lines: list[dict[str, Any]] = []
    logs = stack_paths().logs
    for service in SERVICES:
        for path in (logs / f"{service}.log", logs / f"test-{service}.log"):
            if not path.is_file():
                continue
            with open(path, encoding="utf-8", errors="replace") as handle:
                for raw in handle:
                    if '"trace_id"' not in raw or not any(t in raw for t in trace_ids):
                        continue
                    try:
                        line = json.loads(raw)
                    except json.JSONDecodeError:
                        continue
                    if line.get("trace_id") in trace_ids:
                        lines.append(line)
    return lines


def _stored(trace_id: str) -> list[dict[str, Any]]:
    """VictoriaLogs' records of ``trace_id``."""
    return live.logs_query(f'trace_id:"{trace_id}"')


def _shape(records: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((r.get("service.name", "?"), r.get("severity_text", "?")) for r in records)


def _jaeger_search(service: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    """Jaeger's traces of ``service`` whose spans carry ``tags`` (last hour)."""
    data = live.get_json(f"{live.JAEGER}/api/traces", {
        "service": service, "tags": json.dumps(tags), "lookback": "1h", "limit": "20"})
    return list(data.get("data") or [])


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.timeout(600)
async def test_every_log_line_reaches_victorialogs_with_service_severity_and_trace_id() -> None:
    """Each trace's records in VictoriaLogs are exactly the lines each service logged for it."""
    wait_for_no_faults()
    started = time.time()
    marker = uuid.uuid4().hex[:10]
    previous_poison = httpx.get(f"{kit.WORKER}/admin/faults").json()["poison_marker"]
    previous_crash = httpx.get(f"{kit.EXECUTOR}/admin/faults").json()["tool_failure_marker"]
    kit.set_faults(kit.WORKER, poison_marker=f"#poison-{marker}")
    kit.set_faults(kit.EXECUTOR, tool_failure_marker=f"crash{marker}")
    try:
        _, key = kit.create_tenant(rate_limit_per_minute=1000)
        session = kit.create_session(key)
        # One session, one partition, handled in order: once the crash is answered, the
        # poison message before it has been dead-lettered.
        poison = kit.post_message(key, session, f"hello #poison-{marker}")
        ok = kit.post_message(key, session, "calculate 6*7")
        crash = kit.post_message(key, session, f"stats crash{marker}")
        assert "calculate: 42" in kit.reply_to(key, session, ok["message_id"])["content"]
        assert "tool_crashed" in kit.reply_to(key, session, crash["message_id"])["content"]
    finally:
        kit.set_faults(kit.WORKER, poison_marker=previous_poison)
        kit.set_faults(kit.EXECUTOR, tool_failure_marker=previous_crash)

    # A failed policy evaluation: the tenant's rate-limit counters (this minute and the next)
    # are lists, so the gateway's INCR fails inside the request's span.
    broken, broken_key = kit.create_tenant()
    broken_session = kit.create_session(broken_key)
    store = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    window = int(time.time() // 60)
    counters = [f"ratelimit:{broken}:{w}" for w in (window, window + 1)]
    try:
        for counter in counters:
            store.delete(counter)
            store.rpush(counter, "not a counter")
            store.expire(counter, 180)
        refused = httpx.post(f"{kit.GATEWAY}/v1/sessions/{broken_session}/messages",
                             json={"text": "hello"}, headers=kit.auth(broken_key))
    finally:
        store.delete(*counters)
        store.close()
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "unavailable"
    def refused_traces() -> list[str]:
        """The trace ids of the tenant's 503 message posts in Jaeger."""
        out = []
        for trace in _jaeger_search("gateway", {"soma.tenant.id": broken}):
            for span in trace["spans"]:
                tags = {t["key"]: t["value"] for t in span["tags"]}
                if (span["operationName"] == "POST /v1/sessions/{session_id}/messages"
                        and tags.get("http.response.status_code") == 503):
                    assert tags["otel.status_code"] == "ERROR", tags
                    out.append(trace["traceID"])
        return out

    failed = live.wait_until(refused_traces, lambda found: len(found) == 1, 90,
                             f"the 503 trace of tenant {broken} in Jaeger", interval=2)[0]

    expected = {
        ok["trace_id"]: Counter({("conversation-worker", "INFO"): 1}),
        crash["trace_id"]: Counter({("conversation-worker", "INFO"): 1,
                                    ("tool-executor", "WARN"): 3}),
        poison["trace_id"]: Counter({("conversation-worker", "WARN"): 3}),
        failed: Counter({("gateway", "ERROR"): 1}),
    }
    for trace_id, shape in expected.items():
        records = live.wait_until(partial(_stored, trace_id),
                                  lambda r, s=shape: _shape(r) == s, 60,  # type: ignore[misc]
                                  f"the log records of trace {trace_id}: {dict(shape)}",
                                  interval=1)
        for record in records:
            assert record["trace_id"] == trace_id
            assert len(record["span_id"]) == 16, record
            assert record["service.name"] in SERVICES, record
            assert record["severity_number"] == SEVERITY_NUMBER[record["severity_text"]], record
            assert record["_stream"] == f'{{service.name="{record["service.name"]}"}}', record

    # Exactly what each service wrote to its own stdout, line for line.
    written = Counter(
        (line["trace_id"], line["service.name"], OTLP_SEVERITY[line["level"]], line["message"])
        for line in _stdout_lines(set(expected))
    )
    stored = Counter(
        (r["trace_id"], r["service.name"], r["severity_text"], r["_msg"])
        for trace_id in expected for r in _stored(trace_id)
    )
    assert stored == written, (stored - written, written - stored)
    error = next(r for r in _stored(failed) if r["severity_text"] == "ERROR")
    assert error["_msg"] == "policy evaluation failed"
    assert error["exception.type"] == "ResponseError", error
    assert "WRONGTYPE" in error["exception.message"], error

    # Every ERROR record of the window that has a trace id resolves to a trace in Jaeger.
    window_query = (f"_time:[{_rfc3339(started - 1)}, {_rfc3339(time.time() + 1)}] "
                    "severity_text:ERROR")
    errors = live.logs_query(window_query)
    traced = {r["trace_id"] for r in errors if r.get("trace_id")}
    assert failed in traced
    for trace_id in sorted(traced):
        live.wait_until(partial(live.jaeger_trace, trace_id), bool, 60,
                        f"ERROR log's trace {trace_id} in Jaeger", interval=2)
    print(f"ERROR records in the window: {len(errors)}, with a trace id: {len(traced)} "
          f"(all in Jaeger); without: {sum(1 for r in errors if not r.get('trace_id'))}")
    assert not faults_in_force(), "a fault switch was turned on during the test"
