"""Whole traces through a two-collector gateway tier: trace-ID routing splits no trace.

The agent sends each trace's spans to one gateway collector, chosen by trace ID (the
``loadbalancing`` exporter), and each gateway tail-samples the traces it gets. A trace whose
spans reached both gateways would be decided twice on halves: its error span's half kept, the
rest dropped. So, for a known workload driven as in ``tests/pipeline/test_sampling.py`` (its
closed-loop driver and its completeness check, imported):

* every error trace and every OK trace the baseline policy picks is in Jaeger with each of its
  spans exactly once, parents linked across the Kafka hops, and every kept trace of a kind has
  the same span count (the shape the workload implies); no OK trace the policy does not pick
  is there. One difference from the default profile's shape: every worker replica tails
  ``tool.results`` (each sees every result, to find its own), so a tool trace holds one
  ``tool.results receive`` and one ``process tool.results`` span per worker replica;
* both gateway collectors did work (``otelcol_receiver_accepted_spans`` on each one's own
  telemetry port grew), they refused nothing, and together they accepted exactly the spans the
  agent's trace exporter sent over the run: no span dropped or duplicated between the tiers.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

import pytest

from stack.components import GATEWAY_TIER
from tests import live
from tests.pipeline.test_sampling import (
    ERROR_TEXT,
    EXPECTED,
    LANDING_S,
    OK_TEXT,
    BaselinePolicy,
    _trace,
    drive,
    incompleteness,
)
from tests.scale import harness

pytestmark = [pytest.mark.scale, pytest.mark.usefixtures("scale")]

N_OK, N_ERROR = 150, 6
AGENT_TELEMETRY = 8888  # the agent's own metrics (collector-config/agent.yaml)
TAILED = ("tool.results receive", "process tool.results")
AGENT_TRACE_EXPORTER = "loadbalancing/gateway"  # the agent's exporter to the gateway tier


def _tier_spans() -> dict[str, float]:
    """Spans the agent's trace exporter sent, and spans each gateway accepted and refused."""
    spans = {"agent sent": harness.collector_total(
        AGENT_TELEMETRY, "otelcol_exporter_sent_spans_total", exporter=AGENT_TRACE_EXPORTER)}
    for name, _, _, port in GATEWAY_TIER:
        spans[f"{name} accepted"] = harness.collector_total(
            port, "otelcol_receiver_accepted_spans_total", receiver="otlp")
        spans[f"{name} refused"] = harness.collector_total(
            port, "otelcol_receiver_refused_spans_total", receiver="otlp")
    return spans


def _settled_tier_spans() -> dict[str, float]:
    """:func:`_tier_spans` once two reads 10 s apart agree (the agent's queue has drained)."""
    return live.settled(_tier_spans, 10, 180, "the tiers' span counters to stop moving")


def _shape(spans: list[dict[str, Any]], processes: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The trace's (service, operation) pairs, sorted: what the workload implies it holds."""
    return tuple(sorted((processes[s["processID"]], s["operationName"]) for s in spans))


def _problems(spans: list[dict[str, Any]], processes: dict[str, str]) -> list[str]:
    """What keeps the trace from being whole on the scale profile (empty when whole).

    Every worker replica tails ``tool.results`` (each sees every result, to find its own), so a
    tool trace holds a ``tool.results receive`` and ``process tool.results`` span from each
    replica: the asking replica's (the one with ``conversation.process``) must make the trace
    complete by ``incompleteness``; each other replica adds exactly one of each.
    """
    asker = next((s["processID"] for s in spans if s["operationName"] == "conversation.process"),
                 None)
    others = [s for s in spans if s["operationName"] in TAILED and s["processID"] != asker]
    problems = incompleteness([s for s in spans if s not in others], processes)
    tailed = Counter(s["operationName"] for s in others)
    if tailed != Counter({name: len(harness.WORKERS) - 1 for name in TAILED}):
        problems.append(f"tool.results spans of the other worker replicas: {dict(tailed)}")
    return problems


def _whole(trace_id: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The trace once Jaeger has it whole (fails after LANDING_S)."""
    return live.wait_until(partial(_trace, trace_id),
                           lambda found: bool(found[0]) and not _problems(*found),
                           LANDING_S, f"trace {trace_id} whole in Jaeger", interval=1)


@pytest.mark.timeout(600)
async def test_every_kept_trace_is_whole_and_no_trace_is_split_between_gateways() -> None:
    """Errors and policy-picked OK traces are whole in Jaeger with one shape per kind, the
    rest absent; both gateways accepted spans and together exactly the agent's sent spans."""
    harness.reset_all_faults()
    before = _settled_tier_spans()
    texts = [ERROR_TEXT if i % (N_OK // N_ERROR + 1) == 0 else OK_TEXT
             for i in range(N_OK + N_ERROR)]
    sent = await drive(texts)
    assert Counter(s.text for s in sent) == Counter(texts)
    policy = BaselinePolicy.from_config()
    shapes: dict[str, Counter[tuple[tuple[str, str], ...]]] = {"ok": Counter(), "error": Counter()}
    kept_ok, dropped_ok = [], []
    for s in sent:
        if s.text == ERROR_TEXT or policy.keeps(s.trace_id):
            spans, processes = _whole(s.trace_id)
            shapes["ok" if s.text == OK_TEXT else "error"][_shape(spans, processes)] += 1
            if s.text == OK_TEXT:
                kept_ok.append(s.trace_id)
        else:
            dropped_ok.append(s.trace_id)
    # Every picked trace has landed, so the unpicked ones had time to land too if exported.
    assert [t for t in dropped_ok if _trace(t)[0]] == []
    assert kept_ok, "the policy picked none of the OK traces: the workload is too small"
    for kind, seen in shapes.items():
        assert len(seen) == 1, (kind, seen)  # one shape per kind, hence one span count
        (shape,) = seen
        assert Counter(shape) >= Counter((service, name) for name, service, _ in EXPECTED)
        assert Counter(op for _, op in shape if op in TAILED) == Counter(
            {name: len(harness.WORKERS) for name in TAILED}), shape

    after = _settled_tier_spans()
    grown = harness.growth(after, before)
    accepted = {k: v for k, v in grown.items() if k.endswith("accepted")}
    print(f"tier spans over the run: {grown}; kept {len(kept_ok)} OK of {len(sent) - N_ERROR}, "
          f"{N_ERROR} errors; span counts {[len(s) for seen in shapes.values() for s in seen]}")
    assert len(accepted) == len(GATEWAY_TIER), grown  # each gateway accepted spans
    assert not [k for k in grown if k.endswith("refused")], grown
    assert sum(accepted.values()) == grown["agent sent"], grown
