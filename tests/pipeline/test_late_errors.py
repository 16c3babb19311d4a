"""Late errors: a trace whose error spans arrive long after its first ones is kept whole.

The gateway answers 202 at once, so a conversation's first spans reach the collector within the
SDK's 5 s batch delay, while its worker spans end as late as the longest retry and timeout chain
the services configure (``longest_chain_seconds``: every handler attempt of
``services.common.kafka.RETRY_POLICY`` waiting ``TOOL_RESULT_TIMEOUT_SECONDS`` for a tool and
``SLM_TIMEOUT_SECONDS`` for the SLM, with the back-offs between them).

Here the SLM server is frozen with SIGSTOP, a hung server: the kernel still accepts each
connection and request, nothing answers, so every attempt's ``chat`` span ends ERROR
``slm_timeout`` after 30 s and the record is dead-lettered after the third attempt, about 91 s
after the 202: nine times the 10 s decision window the sampler used to have, when these
traces were kept whole 3 times in 20 (the 10% baseline). The sampler now decides at ingest
(``sampling_strategy: span-ingest``): it holds a trace's spans until one matches a policy, then
releases them all, and drops the trace only ``decision_wait`` after its first span, longer than
the chain (``tests/collector/test_config.py`` checks that bound).

Each conversation is a tool message ("calculate 6*7"), so its trace spans the three services;
the worker handles one record at a time, so the conversations are sent one after another. Each
trace must be in Jaeger whole: one root, every parent present, the spans of every attempt
exactly once, the three ``slm_timeout`` errors and the dead-letter span with the keep flag.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from typing import Any

import pytest

from services.common.kafka import RETRY_POLICY
from stack.stackctl import send_signal
from tests import live
from tests.pipeline.test_sampling import OK_TEXT, _tags, _trace, wait_for_no_faults
from tests.services import kit

pytestmark = pytest.mark.usefixtures("services")

CONVERSATIONS = 2
SLM_TIMEOUT_S = 30  # the worker's SLM_TIMEOUT_SECONDS in the stack
MODEL_SPAN = "chat smollm2-135m-instruct"
#: The operations counted exactly: HTTP, messaging, conversation, tool and model spans. The
#: database and Redis client spans under them vary with the cache; they must only have their
#: parents in the trace.
NAMED = ("POST ", "conversation.", "tool.", "process ", "execute_tool ", "chat ")
#: How long a record may wait in Kafka before the worker takes it (other tests' records).
QUEUE_ALLOWANCE_S = 180


def expected_spans(attempts: int) -> Counter[tuple[str, str]]:
    """(service, operation) -> count in the trace of a tool message whose SLM never answers."""
    once = [
        ("gateway", "POST /v1/sessions/{session_id}/messages"),
        ("gateway", "conversation.events send"),
        ("conversation-worker", "conversation.events receive"),
        ("conversation-worker", "process conversation.events"),
        ("conversation-worker", "conversation.events.dlq send"),
    ]
    per_attempt = [
        ("conversation-worker", "conversation.process"),
        ("conversation-worker", "tool.requests send"),
        ("tool-executor", "tool.requests receive"),
        ("tool-executor", "process tool.requests"),
        ("tool-executor", "execute_tool calculate"),
        ("tool-executor", "tool.results send"),
        ("conversation-worker", "tool.results receive"),
        ("conversation-worker", "process tool.results"),
        ("conversation-worker", MODEL_SPAN),
    ]
    return Counter(once) + Counter({k: attempts for k in per_attempt})


def problems(spans: list[dict[str, Any]], processes: dict[str, str]) -> list[str]:
    """What keeps a late-error trace from being whole (empty when it is)."""
    found: list[str] = []
    ids = {s["spanID"] for s in spans}
    roots = [s["operationName"] for s in spans if not s["references"]]
    if len(roots) != 1:
        found.append(f"roots: {roots}")
    found += [f"{s['operationName']}: dangling parent" for s in spans
              for r in s["references"] if r["spanID"] not in ids]
    have = Counter((processes.get(s["processID"], "?"), s["operationName"]) for s in spans
                   if s["operationName"].startswith(NAMED))
    want = expected_spans(RETRY_POLICY.max_attempts)
    if have != want:
        found.append(f"missing {dict(want - have)}, unexpected {dict(have - want)}")
    return found


def _is_dead_letter(span: dict[str, Any]) -> bool:
    return span["operationName"] == "process conversation.events" and bool(
        _tags(span).get("soma.sampling.keep"))


def _dead_lettered(key: str, session: str) -> dict[str, Any]:
    """Post a tool message and wait until its trace holds the dead-lettered process span."""
    accepted = kit.post_message(key, session, OK_TEXT)
    chain_s = RETRY_POLICY.max_attempts * (SLM_TIMEOUT_S + 1) + QUEUE_ALLOWANCE_S
    live.wait_until(partial(_trace, accepted["trace_id"]),
                    lambda found: any(_is_dead_letter(s) for s in found[0]),
                    chain_s, f"trace {accepted['trace_id']} dead-lettered", interval=2)
    return accepted


@pytest.mark.timeout(900)
def test_traces_whose_slm_fails_after_the_old_decision_window_are_in_jaeger_whole() -> None:
    """Tool conversations whose three SLM attempts each time out after 30 s are kept whole,
    with every span of every attempt, the three timeouts and the dead-letter span."""
    wait_for_no_faults()
    _, key = kit.create_tenant(token_budget=10**9, persona_token_budget=10**9)
    session = kit.create_session(key)
    assert send_signal("STOP", ["slm"]) == 0
    try:
        started = time.monotonic()
        accepted = [_dead_lettered(key, session) for _ in range(CONVERSATIONS)]
        chain_s = (time.monotonic() - started) / CONVERSATIONS
    finally:
        assert send_signal("CONT", ["slm"]) == 0
    whole = 0
    report: dict[str, list[str]] = {}
    for a in accepted:
        spans, processes = live.wait_until(
            partial(_trace, a["trace_id"]), lambda found: not problems(*found), 60,
            f"trace {a['trace_id']} whole in Jaeger", interval=2)
        report[a["trace_id"]] = problems(spans, processes)
        whole += not report[a["trace_id"]]
        chats = [s for s in spans if s["operationName"] == MODEL_SPAN]
        assert [_tags(c)["error.type"] for c in chats] == ["slm_timeout"] * len(chats)
        (dead,) = [s for s in spans if _is_dead_letter(s)]
        assert _tags(dead)["error.type"] == "slm_timeout"
        first, last = (min(s["startTime"] for s in spans),
                       max(s["startTime"] + s["duration"] for s in spans))
        assert (last - first) / 1e6 > RETRY_POLICY.max_attempts * SLM_TIMEOUT_S
    print(f"late-error traces whole: {whole}/{len(accepted)}; {chain_s:.1f} s per conversation")
    assert whole == len(accepted), report
