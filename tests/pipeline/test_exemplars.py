"""Exemplars: every exemplar on a spec histogram links to a trace that Jaeger holds.

Prometheus 2.42 runs with ``--enable-feature=exemplar-storage`` and scrapes the collector's
exporter in OpenMetrics (``enable_open_metrics: true``); the spanmetrics connector attaches
exemplars (trace_id, span_id) to the duration histograms. A message posted with
``X-Soma-Debug-Trace: 1`` is always kept by the tail sampler, so the exemplar of its server
span must name a trace Jaeger holds, in the bucket its duration falls into.

Each bucket of a scrape shows one exemplar (the exporter keeps the last one per bucket and
spanmetrics starts afresh every 5 s flush), so concurrent traffic on the same route can hide a
given request's exemplar: the test posts up to a few debug requests until one is linked.

The collector attaches an exemplar only to a span whose trace the tail sampler keeps by rule
(the 10% baseline decided by trace id, an error, a span slower than the SLO, the keep flag;
docs/pipeline.md), so after a workload of OK and failing conversations every exemplar the
four span-derived histograms got must be found in Jaeger with its span: the share is measured
over all of them and must be at least ``MIN_HIT_SHARE``.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

import pytest

from tests import live
from tests.pipeline.test_sampling import ERROR_TEXT, OK_TEXT, drive, wait_for_no_faults
from tests.services import kit

pytestmark = pytest.mark.usefixtures("services")

ROUTE = "/v1/sessions/{session_id}/messages"
SELECTOR = f'http_request_duration_seconds_bucket{{job="gateway",method="POST",endpoint="{ROUTE}"}}'
BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
ATTEMPTS = 5


def _exemplars(start: float) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """Every (series labels, exemplar) Prometheus holds for the route since ``start``."""
    answer = live.get_json(f"{live.PROMETHEUS}/api/v1/query_exemplars", {
        "query": SELECTOR, "start": f"{start:.3f}", "end": f"{time.time() + 60:.3f}"})
    assert answer["status"] == "success", answer
    return [(group["seriesLabels"], exemplar)
            for group in answer["data"] for exemplar in group["exemplars"]]


def _linked(start: float, trace_ids: set[str]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    return [(s, e) for s, e in _exemplars(start) if e["labels"].get("trace_id") in trace_ids]


@pytest.mark.timeout(300)
def test_a_request_latency_bucket_carries_an_exemplar_of_its_kept_trace() -> None:
    """A debug request's duration bucket has an exemplar whose trace and span are in Jaeger."""
    wait_for_no_faults()
    _, key = kit.create_tenant()
    session = kit.create_session(key)
    start = time.time() - 5
    sent: set[str] = set()
    found: list[tuple[dict[str, str], dict[str, Any]]] = []
    for _ in range(ATTEMPTS):
        sent.add(kit.post_message(key, session, "hello exemplar", debug=True)["trace_id"])
        try:
            found = live.wait_until(partial(_linked, start, sent), bool, 20,
                                    "an exemplar with one of our trace ids", interval=1)
            break
        except AssertionError:
            continue
    assert found, f"none of {len(sent)} debug requests got an exemplar in Prometheus"

    series, exemplar = found[0]
    value = float(exemplar["value"])
    le = float(series["le"].replace("+Inf", "inf"))
    below = max([b for b in BUCKETS if b < le], default=0.0)
    assert below < value <= le, (series, exemplar)
    assert le in BUCKETS

    trace_id, span_id = exemplar["labels"]["trace_id"], exemplar["labels"]["span_id"]
    spans = live.wait_until(partial(live.jaeger_trace, trace_id),
                            lambda s: any(x["spanID"] == span_id for x in s), 60,
                            f"trace {trace_id} with span {span_id} in Jaeger", interval=2)
    span = next(x for x in spans if x["spanID"] == span_id)
    tags = {t["key"]: t["value"] for t in span["tags"]}
    assert span["operationName"] == f"POST {ROUTE}"
    assert tags["soma.sampling.keep"] is True
    assert abs(span["duration"] / 1e6 - value) < 0.001, (span["duration"], value)
    print(f"exemplar: le={series['le']} value={value:.6f}s trace_id={trace_id} "
          f"span_id={span_id} after {len(sent)} request(s)")


#: The spec histograms the spanmetrics connector derives, each with the exemplars it attaches.
SPAN_HISTOGRAMS = ("http_request_duration_seconds", "conversation_processing_duration_seconds",
                   "slm_latency_seconds", "tool_execution_duration_seconds")
MIN_HIT_SHARE = 0.99
#: Longer than a kept trace takes to reach Jaeger: the SDK's 5 s batch delay, the sampler's
#: decision (at ingest for a kept trace), the exporter's batch.
LANDING_S = 30


def _all_exemplars(start: float, end: float) -> list[dict[str, str]]:
    """The labels of every exemplar Prometheus holds on the span-derived histograms."""
    found: list[dict[str, str]] = []
    for name in SPAN_HISTOGRAMS:
        answer = live.get_json(f"{live.PROMETHEUS}/api/v1/query_exemplars", {
            "query": f"{name}_bucket", "start": f"{start:.3f}", "end": f"{end:.3f}"})
        assert answer["status"] == "success", answer
        found += [e["labels"] | {"series": name}
                  for group in answer["data"] for e in group["exemplars"]]
    return found


def exemplar_misses(exemplars: list[dict[str, str]]) -> list[dict[str, str]]:
    """The exemplars whose trace and span Jaeger does not hold."""
    traces: dict[str, set[str]] = {}
    misses = []
    for e in exemplars:
        trace_id = e.get("trace_id", "")
        if trace_id not in traces:
            spans = live.jaeger_trace(trace_id) if trace_id else []
            traces[trace_id] = {s["spanID"] for s in spans}
        if e.get("span_id") not in traces[trace_id]:
            misses.append(e)
    return misses


@pytest.mark.timeout(900)
def test_every_exemplar_of_a_conversation_workload_links_to_a_trace_in_jaeger() -> None:
    """After 200 conversations (one in ten failing) at least 99% of the span-derived
    histograms' exemplars name a trace and span that Jaeger holds."""
    wait_for_no_faults()
    texts = [ERROR_TEXT if i % 10 == 9 else OK_TEXT for i in range(200)]
    start = time.time()
    sent = asyncio.run(drive(texts))
    assert len(sent) == len(texts)
    end = time.time()
    time.sleep(LANDING_S)
    exemplars = _all_exemplars(start, end + 15)
    misses = exemplar_misses(exemplars)
    total = len(exemplars)
    hits = total - len(misses)
    by_series = {name: sum(1 for e in exemplars if e["series"] == name)
                 for name in SPAN_HISTOGRAMS}
    print(f"exemplar hit share: {hits}/{total} = {hits / max(total, 1):.4f}; per series "
          f"{by_series}; misses {misses[:5]}")
    assert all(by_series.values()), by_series
    assert total >= 20, f"only {total} exemplars: too few to measure a share"
    assert hits / total >= MIN_HIT_SHARE, (hits, total, misses[:10])
