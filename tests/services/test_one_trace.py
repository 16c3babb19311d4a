"""One message, one trace: gateway -> worker -> SLM + tool executor -> reply, found in Jaeger."""

from __future__ import annotations

import json
from typing import Any

import pytest
import websockets

from tests import live
from tests.services import kit

pytestmark = pytest.mark.usefixtures("services")


def _spans_by_name(spans: list[dict[str, Any]], processes: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for span in spans:
        tags = {t["key"]: t["value"] for t in span["tags"]}
        out.setdefault(span["operationName"], []).append(
            {"id": span["spanID"], "service": processes[span["processID"]], "tags": tags,
             "parents": [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"],
             "duration_us": span["duration"]}
        )
    return out


def _trace(trace_id: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    data = live.get_json(f"{live.JAEGER}/api/traces/{trace_id}")
    trace = (data.get("data") or [{}])[0]
    processes = {k: v["serviceName"] for k, v in (trace.get("processes") or {}).items()}
    return list(trace.get("spans") or []), processes


REQUIRED = (
    "POST /v1/sessions/{session_id}/messages",
    "conversation.events send",
    "process conversation.events",
    "conversation.process",
    "chat smollm2-135m-instruct",
    "tool.requests send",
    "process tool.requests",
    "execute_tool calculate",
    "tool.results send",
    "conversation.replies send",
    "process conversation.replies",
)


async def test_a_tool_message_yields_one_complete_always_kept_trace_in_jaeger() -> None:
    """A debug-flagged tool message is answered over the WebSocket and its trace is complete."""
    _, key = kit.create_tenant()
    session = kit.create_session(key)
    async with websockets.connect(
        f"ws://127.0.0.1:8010/v1/sessions/{session}/stream",
        additional_headers=kit.auth(key),
    ) as ws:
        accepted = kit.post_message(key, session, "calculate (2+3)*7", debug=True)
        reply = json.loads(await ws.recv())
    assert reply["reply_to"] == accepted["message_id"]
    assert reply["status"] == "answered" and "calculate: 35" in reply["text"]
    trace_id = accepted["trace_id"]

    def complete(found: tuple[list[dict[str, Any]], dict[str, str]]) -> bool:
        names = {s["operationName"] for s in found[0]}
        return all(name in names for name in REQUIRED)

    spans, processes = live.wait_until(lambda: _trace(trace_id), complete, 90,
                                       f"trace {trace_id} complete in Jaeger", interval=2)
    by_name = _spans_by_name(spans, processes)
    unkept = [n for n, group in by_name.items() for s in group
              if s["tags"].get("soma.sampling.keep") is not True]
    assert not unkept, f"spans without soma.sampling.keep: {unkept}"

    def one(name: str, service: str) -> dict[str, Any]:
        matches: list[dict[str, Any]] = [s for s in by_name[name] if s["service"] == service]
        assert len(matches) == 1, (name, service, by_name[name])
        return matches[0]

    server = one("POST /v1/sessions/{session_id}/messages", "gateway")
    assert server["tags"]["http.route"] == "/v1/sessions/{session_id}/messages"
    assert server["tags"]["http.response.status_code"] == 202
    send = one("conversation.events send", "gateway")
    process = one("process conversation.events", "conversation-worker")
    assert process["parents"] == [send["id"]]
    conversation = one("conversation.process", "conversation-worker")
    assert conversation["parents"] == [process["id"]]
    chat = one("chat smollm2-135m-instruct", "conversation-worker")
    assert chat["parents"] == [conversation["id"]]
    assert chat["tags"]["span.kind"] == "client"
    assert chat["tags"]["gen_ai.operation.name"] == "chat"
    assert chat["tags"]["gen_ai.usage.input_tokens"] > 0
    assert chat["tags"]["gen_ai.usage.output_tokens"] > 0
    tool_send = one("tool.requests send", "conversation-worker")
    assert tool_send["parents"] == [conversation["id"]]
    tool_process = one("process tool.requests", "tool-executor")
    assert tool_process["parents"] == [tool_send["id"]]
    run = one("execute_tool calculate", "tool-executor")
    assert run["parents"] == [tool_process["id"]]
    assert run["tags"]["gen_ai.operation.name"] == "execute_tool"
    assert run["tags"]["gen_ai.tool.name"] == "calculate"
    assert run["tags"]["soma.sandbox.cpu_seconds"] > 0
    reply_send = one("conversation.replies send", "conversation-worker")
    assert reply_send["parents"] == [conversation["id"]]
    reply_process = one("process conversation.replies", "gateway")
    assert reply_process["parents"] == [reply_send["id"]]
