"""Tail sampling: 10% of OK traces by trace id, every error trace, every kept trace complete.

A workload of OK conversations ("calculate 6*7": gateway -> Kafka -> worker -> tool executor
-> SLM -> reply, so every trace spans the three services) and a known number of error
conversations ("calculate 1/0": the executor's ``execute_tool`` span ends ERROR ``tool_error``)
runs through the real services, each session a closed loop (post, wait for the reply on the
WebSocket, post the next), so no trace comes near the 5 s latency policy. Every message asks
for a one-token SLM reply (``max_reply_tokens``), which keeps the SLM at ~0.06 s a call.

The sampler decides at ingest (``sampling_strategy: span-ingest``): a trace whose spans match a
policy is released at once, so once an always-kept sentinel sent after the workload is in
Jaeger, each trace is looked up by the trace id of its 202 answer. The baseline policy decides
by trace id alone, with the SDK's ``TraceIdRatioBased(0.1)`` rule (low 64 bits below
``round(0.1 * 2**64)``, written as a pattern on the id's hex string). So the kept OK traces
must be exactly the ones that rule picks (``BaselinePolicy``, read from the collector's
config), and the rule must keep 10% of the SDK's random ids: its share over
200,000 fresh ids, and the share kept in the live run, must lie in the equal-tailed acceptance
interval of Binomial(n, 0.10) at ``CONFIDENCE``, computed exactly below (no scipy). Every error
trace must be kept; every kept trace must hold each expected span of the three services
exactly once, with its parent links intact across the Kafka hops. The spanmetrics series, fed
every span before the sampler, must still count every conversation.

``CONFIDENCE`` is 1 - 1e-6: a correct pipeline fails a share check once in a million runs. (At
99% the CI-sized run failed about one run in 150: 16 of 300 kept, just under the range 17-44.)
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import urllib.error
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
import websockets
import yaml
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from tests import live
from tests.collector.test_config import CONFIG
from tests.services import kit

pytestmark = pytest.mark.usefixtures("services")

OK_TEXT, ERROR_TEXT = "calculate 6*7", "calculate 1/0"
SESSIONS = 6  # closed loops in parallel: the worker handles one record at a time anyway
SLO_MARGIN_S = 4.5  # the latency policy keeps traces over 5 s; slower messages are left out
BASELINE = 0.10  # tail_sampling's probabilistic policy: sampling_percentage 10
#: Longer than a kept trace takes to reach Jaeger: it is released at ingest, after the SDK's
#: 5 s batch delay; the exporters' batches add under a second.
LANDING_S = 60
CONFIDENCE = 1 - 1e-6

# (operation, service, operation of its parent or None for the root): the complete trace of
# one tool message; each appears exactly once.
EXPECTED: tuple[tuple[str, str, str | None], ...] = (
    ("POST /v1/sessions/{session_id}/messages", "gateway", None),
    ("conversation.events send", "gateway", "POST /v1/sessions/{session_id}/messages"),
    ("conversation.events receive", "conversation-worker", "conversation.events send"),
    ("process conversation.events", "conversation-worker", "conversation.events send"),
    ("conversation.process", "conversation-worker", "process conversation.events"),
    ("tool.requests send", "conversation-worker", "conversation.process"),
    ("tool.requests receive", "tool-executor", "tool.requests send"),
    ("process tool.requests", "tool-executor", "tool.requests send"),
    ("execute_tool calculate", "tool-executor", "process tool.requests"),
    ("tool.results send", "tool-executor", "execute_tool calculate"),
    ("tool.results receive", "conversation-worker", "tool.results send"),
    ("process tool.results", "conversation-worker", "tool.results send"),
    ("chat smollm2-135m-instruct", "conversation-worker", "conversation.process"),
    ("conversation.replies send", "conversation-worker", "conversation.process"),
    ("conversation.replies receive", "gateway", "conversation.replies send"),
    ("process conversation.replies", "gateway", "conversation.replies send"),
)


#: The baseline's trace id pattern, in the sampler's policy and the exemplar transform.
BASELINE_PATTERN = re.compile(r'IsMatch\(span\.trace_id\.string, "(?P<pattern>[^"]+)"\)')


@dataclass(frozen=True)
class BaselinePolicy:
    """The tail sampler's baseline policy: which trace ids it keeps.

    An ``ottl_condition`` policy matching the trace id's hex string against a pattern; the
    pattern encodes the SDK's ``TraceIdRatioBased(0.1)`` rule (low 64 bits below
    ``round(0.1 * 2**64)``), which the tests below check against the SDK's own sampler.
    """

    pattern: str

    @classmethod
    def from_config(cls) -> BaselinePolicy:
        """The policy named baseline-10-percent in collector-config/config.yaml."""
        config = yaml.safe_load(CONFIG.read_text())["processors"]["tail_sampling"]
        policy = next(p for p in config["policies"] if p["name"] == "baseline-10-percent")
        (condition,) = policy["ottl_condition"]["span"]
        match = BASELINE_PATTERN.fullmatch(condition)
        assert match, condition
        return cls(match["pattern"])

    def keeps(self, trace_id: str) -> bool:
        """Whether the policy keeps the trace with this 32-hex-digit id (RE2 and re agree on
        this pattern: anchors, classes and bounded repeats only)."""
        return re.match(self.pattern, trace_id) is not None


def _sdk_keeps(trace_id: int) -> bool:
    """The SDK's TraceIdRatioBased(0.1) decision for a root span of ``trace_id``."""
    result = TraceIdRatioBased(BASELINE).should_sample(None, trace_id, "probe")
    return result.decision.is_sampled()


def test_baseline_policy_is_the_sdks_trace_id_ratio_rule_at_its_boundary() -> None:
    """Around the bound round(0.1 * 2**64), and at the extremes, the policy decides as the
    SDK's TraceIdRatioBased(0.1) does, whatever the high 64 bits."""
    policy = BaselinePolicy.from_config()
    bound = TraceIdRatioBased.get_bound_for_rate(BASELINE)
    assert bound == 0x1999999999999A00
    lows = [*range(bound - 4096, bound + 4096), 0, 2**64 - 1, 0x0FFFFFFFFFFFFFFF,
            0x1000000000000000, 0x1998FFFFFFFFFFFF, 0x19999999999999FF]
    for high in (0, 0x0AF7651916CD43DD, 2**64 - 1):
        for low in lows:
            trace_id = high << 64 | low
            assert policy.keeps(f"{trace_id:032x}") == _sdk_keeps(trace_id), hex(trace_id)


def test_baseline_policy_keeps_10_percent_of_the_sdks_random_trace_ids() -> None:
    """Over 200,000 ids from the SDK's generator the policy decides as TraceIdRatioBased(0.1)
    and the kept share is in the binomial range."""
    policy, ids = BaselinePolicy.from_config(), RandomIdGenerator()
    n, kept = 200_000, 0
    for _ in range(n):
        trace_id = ids.generate_trace_id()
        decision = policy.keeps(f"{trace_id:032x}")
        assert decision == _sdk_keeps(trace_id), f"{trace_id:032x}"
        kept += decision
    lo, hi = binomial_interval(n, BASELINE, CONFIDENCE)
    assert lo <= kept <= hi, (kept, lo, hi)


def test_exemplar_transform_uses_the_baseline_policys_pattern() -> None:
    """transform/exemplar_traces keeps a span's trace id for the exemplar under the very
    pattern the sampler's baseline uses, so the two cannot drift."""
    config = yaml.safe_load(CONFIG.read_text())["processors"]["transform/exemplar_traces"]
    (statement,) = config["trace_statements"]
    assert [m["pattern"] for m in BASELINE_PATTERN.finditer(statement)] == [
        BaselinePolicy.from_config().pattern]


def binomial_interval(n: int, p: float, confidence: float = 0.99) -> tuple[int, int]:
    """The equal-tailed acceptance interval [lo, hi] of Binomial(n, p), computed exactly.

    lo is the largest k with P(X < k) <= (1 - confidence) / 2 and hi the smallest k with
    P(X > k) <= (1 - confidence) / 2, so P(lo <= X <= hi) >= confidence.
    """
    tail = (1 - confidence) / 2
    log_p, log_q = math.log(p), math.log1p(-p)
    pmf = [
        math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                 + k * log_p + (n - k) * log_q)
        for k in range(n + 1)
    ]
    lo, below = 0, 0.0
    while below + pmf[lo] <= tail:
        below += pmf[lo]
        lo += 1
    hi, above = n, 0.0
    while above + pmf[hi] <= tail:
        above += pmf[hi]
        hi -= 1
    return lo, hi


def wilson_interval(kept: int, n: int, z: float = 2.5758293035489) -> tuple[float, float]:
    """The Wilson score interval (99% for the default z) of an observed share kept / n."""
    share = kept / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_binomial_interval_is_the_exact_equal_tailed_99_percent_range() -> None:
    """The interval equals the exact one (from rational arithmetic) and is near p +- 2.576 sd."""
    lo, hi = binomial_interval(2000, 0.1)
    sigma = math.sqrt(2000 * 0.1 * 0.9)
    assert abs(lo - (200 - 2.576 * sigma)) <= 2 and abs(hi - (200 + 2.576 * sigma)) <= 2
    assert (lo, hi) == (166, 235)  # tails 0.00424 and 0.00479 with fractions.Fraction
    assert binomial_interval(300, 0.1) == (17, 44)
    assert binomial_interval(300, 0.1, CONFIDENCE) == (8, 58)  # tails 2.0e-7 and 3.8e-7, exact
    assert binomial_interval(10, 0.5, 0.0) == (5, 5)


@dataclass(frozen=True)
class Sent:
    """One message of the workload and what came back."""

    text: str
    trace_id: str
    status: str
    reply: str
    seconds: float


async def _session_loop(client: httpx.AsyncClient, key: str, session: str,
                        texts: list[str], out: list[Sent]) -> None:
    """Post each text in turn on one session, waiting for its reply on the WebSocket."""
    async with websockets.connect(f"ws://127.0.0.1:8010/v1/sessions/{session}/stream",
                                  additional_headers=kit.auth(key)) as ws:
        for text in texts:
            start = time.monotonic()
            answer = await client.post(
                f"{kit.GATEWAY}/v1/sessions/{session}/messages",
                json={"text": text, "max_reply_tokens": 1}, headers=kit.auth(key),
            )
            assert answer.status_code == 202, answer.text
            accepted = answer.json()
            deadline = start + 60
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0))
                except TimeoutError:
                    raise AssertionError(f"no reply to {accepted} within 60 s") from None
                frame = json.loads(raw)
                if frame["reply_to"] == accepted["message_id"]:
                    break
            out.append(Sent(text, accepted["trace_id"], frame["status"], frame["text"],
                            time.monotonic() - start))


async def drive(texts: list[str]) -> list[Sent]:
    """Run ``texts`` through the services over SESSIONS closed loops; return what was sent."""
    _, key = kit.create_tenant(rate_limit_per_minute=1_000_000, token_budget=10**9,
                               persona_token_budget=10**9)
    sessions = [kit.create_session(key) for _ in range(SESSIONS)]
    out: list[Sent] = []
    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(
            _session_loop(client, key, session, texts[i::SESSIONS], out)
            for i, session in enumerate(sessions)
        ))
    return out


# Markers only hit messages that contain them (ours never contain another run's marker).
MARKERS = ("poison_marker", "tool_failure_marker")


def faults_in_force() -> dict[str, Any]:
    """The fault switches on, on any service, that would change every message's outcome."""
    on: dict[str, Any] = {}
    for base in (kit.GATEWAY, kit.WORKER, kit.EXECUTOR):
        on |= {k: v for k, v in httpx.get(f"{base}/admin/faults").json().items()
               if v and k not in MARKERS}
    return on


def wait_for_no_faults() -> None:
    """Wait until no such switch is on: they are global, and another run may be using them."""
    live.wait_until(faults_in_force, lambda on: not on, 900,
                    "the fault switches of another run to be turned off", interval=5)


def _trace(trace_id: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Jaeger's spans of ``trace_id`` and its process id -> service name map ([] if absent)."""
    try:
        data = live.get_json(f"{live.JAEGER}/api/traces/{trace_id}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return [], {}
        raise
    trace = (data.get("data") or [{}])[0]
    processes = {k: v["serviceName"] for k, v in (trace.get("processes") or {}).items()}
    return list(trace.get("spans") or []), processes


def incompleteness(spans: list[dict[str, Any]], processes: dict[str, str]) -> list[str]:
    """What keeps the trace from being complete (empty when complete and well linked)."""
    problems: list[str] = []
    ids = {s["spanID"] for s in spans}
    by_id = {s["spanID"]: s for s in spans}
    roots = [s["operationName"] for s in spans if not s["references"]]
    if len(roots) != 1:
        problems.append(f"roots: {roots}")
    for span in spans:
        for ref in span["references"]:
            if ref["spanID"] not in ids or ref["traceID"] != span["traceID"]:
                problems.append(f"{span['operationName']}: dangling parent {ref['spanID']}")
    for name, service, parent in EXPECTED:
        found = [s for s in spans if s["operationName"] == name
                 and processes.get(s["processID"]) == service]
        if len(found) != 1:
            problems.append(f"{service} {name!r}: {len(found)} spans")
            continue
        parents = [by_id[r["spanID"]]["operationName"] for r in found[0]["references"]
                   if r["refType"] == "CHILD_OF" and r["spanID"] in by_id]
        if parents != ([] if parent is None else [parent]):
            problems.append(f"{name!r}: parents {parents}, expected {parent}")
    return problems


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


SPANMETRICS = 'conversation_requests_total{job="conversation-worker"}'
INTENTS = 'intent_classification_total{job="conversation-worker"}'
POISON = 'conversation_errors_total{job="conversation-worker",error_type="poison_message"}'
#: Longer than a count takes to reach Prometheus: SDK export (5 s) or spanmetrics flush (5 s),
#: then the collector scrape (5 s).
SETTLE_S = 20


def _settled_totals() -> dict[str, float]:
    """The three totals once two reads ``SETTLE_S`` apart agree: no conversation left in flight
    by an earlier test (a conversation whose intent was counted before the baseline and whose
    span ends after it would break the delta equality below)."""
    exprs = (SPANMETRICS, INTENTS, POISON)
    return live.settled(lambda: {expr: live.prom_total(expr) for expr in exprs}, SETTLE_S, 300,
                        "the conversation counters to stop moving")


async def _run_sampling_workload(n_ok: int, n_error: int) -> dict[str, Any]:
    """Drive the workload and assert every sampling property; return the measured figures."""
    wait_for_no_faults()
    before = _settled_totals()
    step = n_ok // n_error
    texts = [ERROR_TEXT if i % (step + 1) == step else OK_TEXT for i in range(n_ok + n_error)]
    assert texts.count(ERROR_TEXT) == n_error
    started = time.monotonic()
    sent = await drive(texts)
    drive_seconds = time.monotonic() - started
    assert len(sent) == n_ok + n_error
    assert not faults_in_force(), "a fault switch was turned on during the workload"
    ok = [s for s in sent if s.text == OK_TEXT]
    errors = [s for s in sent if s.text == ERROR_TEXT]
    assert all(s.status == "answered" and "calculate: 42" in s.reply for s in ok), [
        s for s in ok if "calculate: 42" not in s.reply][:3]
    assert all(s.status == "answered" and "tool_error" in s.reply for s in errors), errors[:3]

    # Every error trace is kept: wait until each is complete in Jaeger.
    for s in errors:
        spans, processes = live.wait_until(
            partial(_trace, s.trace_id),
            lambda found: bool(found[0]) and not incompleteness(*found),
            LANDING_S, f"error trace {s.trace_id} complete in Jaeger", interval=1,
        )
        failed = [x for x in spans if x["operationName"] == "execute_tool calculate"]
        assert _tags(failed[0])["otel.status_code"] == "ERROR"
        assert _tags(failed[0])["error.type"] == "tool_error"
    # Barrier: an always-kept sentinel sent after the workload. The sampler releases a kept
    # trace as its spans arrive, in order, so once the sentinel is complete in Jaeger every
    # kept workload trace has been exported (the others are never released).
    _, sentinel_key = kit.create_tenant()
    sentinel_session = kit.create_session(sentinel_key)
    sentinel = kit.post_message(sentinel_key, sentinel_session, OK_TEXT, debug=True)
    live.wait_until(lambda: _trace(sentinel["trace_id"]),
                    lambda found: bool(found[0]) and not incompleteness(*found),
                    LANDING_S, "the sentinel trace complete in Jaeger", interval=1)

    sample = [s for s in ok if s.seconds < SLO_MARGIN_S]
    assert len(sample) >= 0.95 * len(ok), f"{len(ok) - len(sample)} OK messages over 4.5 s"
    policy = BaselinePolicy.from_config()
    kept: list[Sent] = []
    incomplete: dict[str, list[str]] = {}
    for s in sample:
        spans, processes = _trace(s.trace_id)
        if not spans:
            continue
        kept.append(s)
        if incompleteness(spans, processes):  # a kept trace may still be landing
            spans, processes = live.wait_until(
                partial(_trace, s.trace_id),
                lambda found: not incompleteness(*found), 30,
                f"kept trace {s.trace_id} complete", interval=1,
            )
        if problems := incompleteness(spans, processes):
            incomplete[s.trace_id] = problems
        assert not [x["operationName"] for x in spans
                    if _tags(x).get("otel.status_code") == "ERROR"], s.trace_id
        chat = next(x for x in spans if x["operationName"] == "chat smollm2-135m-instruct")
        assert _tags(chat)["gen_ai.request.max_tokens"] == 1
    assert not incomplete, incomplete

    lo, hi = binomial_interval(len(sample), BASELINE, CONFIDENCE)
    share = len(kept) / len(sample)
    figures = {
        "ok_sent": len(ok), "ok_sample": len(sample), "kept": len(kept), "share": share,
        "interval": (lo / len(sample), hi / len(sample)), "interval_counts": (lo, hi),
        "wilson99_of_share": wilson_interval(len(kept), len(sample)),
        "errors_sent": len(errors), "drive_seconds": drive_seconds,
        "max_message_seconds": max(s.seconds for s in sent),
    }
    print(f"sampling figures: {figures}")
    # The policy decides by id alone, so the kept set is known exactly: a kept trace the rule
    # drops, or a dropped one it keeps, is a sampler or export fault, not chance.
    picked = {s.trace_id for s in sample if policy.keeps(s.trace_id)}
    found = {s.trace_id for s in kept}
    assert found == picked, {"kept, not picked": found - picked, "picked, absent": picked - found}
    assert lo <= len(kept) <= hi, figures

    # Spanmetrics see every span before the sampler: conversation_requests_total grows by
    # every conversation (the SDK's intent counter, unsampled, counts the same ones; a poison
    # retry is the only conversation.process without an intent), not by the kept 10%.
    def deltas() -> tuple[float, float, float]:
        conv, intents, poison = (live.prom_total(e) - before[e]
                                 for e in (SPANMETRICS, INTENTS, POISON))
        return conv, intents, poison

    conv, intents, poison = live.wait_until(
        deltas, lambda d: d[0] == d[1] + d[2] and d[1] >= len(sent) + 1, 90,
        f"conversation_requests_total to grow by every conversation (>= {len(sent) + 1})",
        interval=2,
    )
    figures["conversation_requests_delta"] = conv
    print(f"spanmetrics: conversation_requests_total +{conv:.0f} for {len(sent)} sent "
          f"(intents +{intents:.0f}, poison retries +{poison:.0f}); Jaeger kept "
          f"{len(kept) + len(errors)}")
    return figures


@pytest.mark.timeout(600)
async def test_ci_sized_sampling_keeps_the_ok_traces_the_policy_picks_every_error_whole_traces(
) -> None:
    """With 300 OK and 10 error traces: the OK traces the policy picks, all errors, whole."""
    await _run_sampling_workload(300, 10)


@pytest.mark.long
@pytest.mark.timeout(1800)
async def test_2000_ok_traces_kept_are_the_ones_the_policy_picks_and_10_percent_of_them(
) -> None:
    """With 2,000 OK and 40 error traces: the picked OK traces, all errors, kept traces whole."""
    await _run_sampling_workload(2000, 40)
