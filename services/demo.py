"""The demo workload: ``python -m services.demo`` (``make demo``; ``make up`` runs it).

Against the running gateway (127.0.0.1:8010) and the other two services it:

1. creates two tenants through the loopback admin endpoint: ``demo-<run>`` (all tools, ample
   budget) and ``demo-<run>-tight`` (token budget 1, tool ``calculate`` not allowed), each with
   a fresh API key, and one session each;
2. turns on the worker's ``poison_marker`` and the executor's ``tool_failure_marker`` switches
   (restored afterwards), then sends a known mix, always-kept traces included:

   ==========================  ===============================================================
   kind                        what happens
   ==========================  ===============================================================
   ``ok``                      greetings and questions: SLM answer
   ``tool``                    ``calculate``/``stats``/``primes``: tool run + SLM answer
   ``tool_failure``            ``calculate 1/0`` (tool_error) and the failure marker
                               (tool_crashed, retried, then ``tool.requests.dlq``)
   ``policy_blocked``          ``calculate`` for the tight tenant
   ``budget_exhausted``        the tight tenant's messages after its first one
   ``poison``                  a message with the poison marker (``conversation.events.dlq``)
   ``bad_input``               malformed JSON, a missing field, a bad key, an unknown session
                               (each a 4xx, checked)
   ==========================  ===============================================================

3. waits for every reply (stored in PostgreSQL; the poison message gets none, by design),
   prints a table of outcomes, and where to look: Prometheus queries, the Zipkin Lens page of
   one tool request's trace (its waterfall, gateway -> worker -> executor) and a Lens search
   for this run's gateway traces (docs/trace-ui.md), the same trace as JSON from Jaeger's API,
   and a VictoriaLogs search.

``--rounds N`` repeats the mix (default 1). Exit status 1 if a reply is missing or a bad-input
call did not answer the expected 4xx.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

GATEWAY = "http://127.0.0.1:8010"
WORKER = "http://127.0.0.1:8011"
EXECUTOR = "http://127.0.0.1:8012"
PROMETHEUS = "http://127.0.0.1:9090"
JAEGER = "http://127.0.0.1:16686"
ZIPKIN = "http://127.0.0.1:9411"
VICTORIALOGS = "http://127.0.0.1:9428"
POISON = "#poison-demo"
TOOL_CRASH = "#crash-demo"


@dataclass
class Sent:
    """One accepted message and what the demo expects of it."""

    kind: str
    key: str
    session: str
    message_id: str
    trace_id: str
    expect_reply: bool = True


def _fail(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr)
    raise SystemExit(1)


class Demo:
    """One run of the workload."""

    def __init__(self, client: httpx.Client) -> None:
        self.http = client
        self.sent: list[Sent] = []
        self.bad_input: list[tuple[str, int, int]] = []

    def tenant(self, tenant_id: str, **policy: Any) -> str:
        answer = self.http.post(f"{GATEWAY}/admin/tenants", json={"tenant_id": tenant_id,
                                                                   **policy})
        answer.raise_for_status()
        return str(answer.json()["api_key"])

    def session(self, key: str) -> str:
        answer = self.http.post(f"{GATEWAY}/v1/sessions", headers=_auth(key), json={})
        answer.raise_for_status()
        return str(answer.json()["session_id"])

    def send(self, kind: str, key: str, session: str, text: str, *,
             expect_reply: bool = True) -> None:
        answer = self.http.post(
            f"{GATEWAY}/v1/sessions/{session}/messages", json={"text": text},
            headers=_auth(key) | {"X-Soma-Debug-Trace": "1"},
        )
        if answer.status_code != 202:
            _fail(f"{kind} message answered {answer.status_code}: {answer.text}")
        body = answer.json()
        self.sent.append(Sent(kind, key, session, body["message_id"], body["trace_id"],
                              expect_reply))

    def bad(self, what: str, expected: int, response: httpx.Response) -> None:
        self.bad_input.append((what, expected, response.status_code))

    def wait_for_replies(self, timeout: float) -> dict[str, dict[str, Any]]:
        replies: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        wanted = {s.message_id for s in self.sent if s.expect_reply}
        while time.monotonic() < deadline and not wanted <= replies.keys():
            for session, key in {(s.session, s.key) for s in self.sent}:
                listed = self.http.get(f"{GATEWAY}/v1/sessions/{session}/messages",
                                       headers=_auth(key)).json()
                for message in listed["messages"]:
                    if message["reply_to"]:
                        replies[message["reply_to"]] = message
            time.sleep(0.5)
        return replies


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def run(rounds: int) -> None:
    """Run the workload ``rounds`` times over the same tenants; print the summary."""
    run_id = uuid.uuid4().hex[:6]
    with httpx.Client(timeout=30) as client:
        demo = Demo(client)
        for base in (GATEWAY, WORKER, EXECUTOR):
            try:
                ready = client.get(f"{base}/readyz").status_code == 200
            except httpx.HTTPError as exc:
                _fail(f"{base} is unreachable ({exc}); start the stack (make up)")
            if not ready:
                _fail(f"{base}/readyz is not ready; start the stack (make up)")
        key = demo.tenant(f"demo-{run_id}", allowed_tools=["calculate", "stats", "primes"])
        session = demo.session(key)
        client.post(f"{WORKER}/admin/faults", json={"poison_marker": POISON}).raise_for_status()
        client.post(f"{EXECUTOR}/admin/faults",
                    json={"tool_failure_marker": TOOL_CRASH}).raise_for_status()
        try:
            for round_no in range(rounds):
                tight = demo.tenant(f"demo-{run_id}-tight{round_no}", token_budget=1,
                                    persona_token_budget=1, allowed_tools=["stats"])
                tight_session = demo.session(tight)
                demo.send("ok", key, session, "Hello there!")
                demo.send("ok", key, session, "What is the capital of France?")
                demo.send("tool", key, session, "calculate (17 + 25) * 3")
                demo.send("tool", key, session, "stats The quick brown fox. It jumps!")
                demo.send("tool", key, session, "primes 100000")
                demo.send("tool_failure", key, session, "calculate 1/0")
                demo.send("tool_failure", key, session, f"stats {TOOL_CRASH}")
                demo.send("policy_blocked", tight, tight_session, "calculate 2+2")
                demo.send("budget_exhausted", tight, tight_session, "Hello again")
                demo.send("poison", key, session, f"this one is poison {POISON}",
                          expect_reply=False)
                url = f"{GATEWAY}/v1/sessions/{session}/messages"
                demo.bad("malformed JSON", 400, client.post(
                    url, content=b"{nope", headers=_auth(key) | {"Content-Type":
                                                                 "application/json"}))
                demo.bad("missing field", 422, client.post(url, json={}, headers=_auth(key)))
                demo.bad("invalid API key", 401, client.post(
                    url, json={"text": "hi"}, headers=_auth("soma_wrong")))
                demo.bad("unknown session", 404, client.post(
                    f"{GATEWAY}/v1/sessions/{uuid.uuid4()}/messages", json={"text": "hi"},
                    headers=_auth(key)))
            replies = demo.wait_for_replies(timeout=120 + 30 * rounds)
        finally:
            client.post(f"{WORKER}/admin/faults", json={"poison_marker": None})
            client.post(f"{EXECUTOR}/admin/faults", json={"tool_failure_marker": None})
    _report(demo, replies, run_id)


def _report(demo: Demo, replies: dict[str, dict[str, Any]], run_id: str) -> None:
    print(f"{'kind':<18} {'status':<12} reply")
    missing = 0
    for sent in demo.sent:
        reply = replies.get(sent.message_id)
        if reply is None:
            status, text = ("(none: DLQ)" if not sent.expect_reply else "MISSING"), ""
            missing += 0 if not sent.expect_reply else 1
        else:
            status, text = reply["status"], reply["content"].replace("\n", " | ")[:70]
        print(f"{sent.kind:<18} {status:<12} {text}")
    wrong = [b for b in demo.bad_input if b[1] != b[2]]
    for what, expected, got in demo.bad_input:
        print(f"{'bad_input':<18} {got:<12} {what} (expected {expected})")
    tool_trace = next(s.trace_id for s in demo.sent if s.kind == "tool")
    queries = [
        "sum by (job, status) (rate(http_requests_total[5m]))",
        "sum by (tool_name, status) (tool_execution_total)",
        f'budget_limit_reached_total{{tenant=~"demo-{run_id}-tight.*"}}',
        "sum by (source_topic, error_type) (dlq_events_total)",
    ]
    print("\nWhere to look:")
    for query in queries:
        print(f"  Prometheus: {PROMETHEUS}/graph?" + urllib.parse.urlencode({"g0.expr": query}))
    print(f"  Zipkin Lens (one tool request, always kept): {lens_trace_url(tool_trace)}")
    print("  Zipkin Lens (this run's gateway traces): "
          + lens_search_url({"serviceName": "gateway",
                             "annotationQuery": f"soma.tenant.id=demo-{run_id}"}))
    print(f"  Jaeger API (the same trace, JSON): {JAEGER}/api/traces/{tool_trace}")
    print(f"  VictoriaLogs UI: {VICTORIALOGS}/select/vmui/#/?"
          + urllib.parse.urlencode({"query": f"trace_id:{tool_trace}"}))
    print(f"  VictoriaLogs API: {VICTORIALOGS}/select/logsql/query?"
          + urllib.parse.urlencode({"query": f"trace_id:{tool_trace}"}))
    if missing or wrong:
        _fail(f"{missing} replies missing, {len(wrong)} bad-input answers unexpected: {wrong}")


def lens_trace_url(trace_id: str) -> str:
    """The Zipkin Lens page of one trace: its waterfall."""
    return f"{ZIPKIN}/zipkin/traces/{trace_id}"


def lens_search_url(criteria: dict[str, str], lookback: str = "1h", limit: int = 20) -> str:
    """A Lens search that runs when opened: ``criteria`` (serviceName, spanName,
    annotationQuery, minDuration) over the ``lookback`` before now. Lens runs a search from
    its URL only with a time window that has an end (``endTs``, ms) and a ``limit``."""
    params = {**criteria, "lookback": lookback, "endTs": str(int(time.time() * 1000)),
              "limit": str(limit)}
    return f"{ZIPKIN}/zipkin/?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


def main() -> None:
    """Parse the arguments and run the workload."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="repetitions of the mix")
    run(parser.parse_args().rounds)


if __name__ == "__main__":
    main()
