"""The gateway tier (collector-config/gateway.yaml, issue 16 item 2): traces load-balanced by
trace ID over two gateway collectors, each tail-sampling whole traces.

Real processes only (helpers in tests/collector/test_agent.py): an agent (config.yaml +
agent.yaml + agent-local.yaml on moved ports) and two gateway collectors (gateway.yaml on free
ports), each sending what its tail sampler keeps to its own OTLP/gRPC sink in the test process.
The test plays a service: it sends hand-built OTLP spans to the agent over gRPC, one span per
export, so that the spans of one trace reach the gateway tier in separate batches.

* gateway.yaml is what render_tiers.py renders from config.yaml, and validates.
* Whole traces: with the shipped sampling policies, traces whose ONLY reason to be kept
  (``soma.sampling.keep``) is on the span sent LAST arrive complete, which the span-ingest
  sampler can only do if it held every earlier span of the trace, i.e. if all of them reached
  the same gateway; traces with no reason to be kept arrive not at all.
* SIGKILL of one gateway under load: the agent's counts stay exact; every span sent after the
  kill arrives exactly once (the dead gateway's share waits in the agent and is delivered once
  it is back), the live gateway gets nothing twice, and what is lost is reported: spans the
  dead gateway had accepted and not yet exported.
* An agent without a list of gateways (unset, empty, a map) does not start, and says why.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from bench.common import TRACE_EXPORT
from stack.components import COLLECTOR_FEATURE_GATES
from tests import live
from tests.collector.test_agent import (
    GATEWAY,
    REPO,
    BackgroundLoad,
    Collector,
    Tier,
    agent_collector,
    collector_binary,
    red_count,
    running_tier,
    sample_everything,
    total,
)

RENDER = REPO / "collector-config" / "render_tiers.py"
SERVICE = "tiers-probe"


# ------------------------------------------------------------------------------ gateway.yaml


def test_gateway_yaml_is_rendered_from_config_yaml() -> None:
    """render_tiers.py --check passes: gateway.yaml holds config.yaml's blocks, not a copy
    that drifted."""
    done = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(RENDER), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_gateway_yaml_validates(tmp_path: Path) -> None:
    """`otelcol-soma validate` accepts gateway.yaml with its three variables set."""
    env = {"SOMA_GATEWAY_OTLP_GRPC": "127.0.0.1:4417", "SOMA_GATEWAY_HEALTH": "127.0.0.1:13134",
           "SOMA_GATEWAY_TELEMETRY_PORT": "8898"}
    done = subprocess.run([str(collector_binary()), "validate", COLLECTOR_FEATURE_GATES,
                           "--config", str(GATEWAY)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------ the service


class Service:
    """Sends OTLP spans of one service instance to the agent over gRPC, one export each."""

    def __init__(self, agent: Collector) -> None:
        self.job = f"{SERVICE}-{secrets.token_hex(4)}"
        self.channel = grpc.insecure_channel(agent.grpc_address)
        self.export = self.channel.unary_unary(
            f"/{TRACE_EXPORT}/Export",
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString)

    def send(self, trace_id: bytes, span_id: bytes, parent: bytes, root: bool,
             keep: bool = False) -> None:
        """One span in its own export: a SERVER span of GET /tiers when ``root`` (counted as
        a request by the agent's spanmetrics), else an INTERNAL child."""
        attributes = [KeyValue(key="soma.sampling.keep", value=AnyValue(bool_value=True))] \
            if keep else []
        if root:
            attributes += [
                KeyValue(key="http.request.method", value=AnyValue(string_value="GET")),
                KeyValue(key="http.route", value=AnyValue(string_value="/tiers")),
                KeyValue(key="http.response.status_code", value=AnyValue(int_value=200))]
        now = time.time_ns()
        span = Span(trace_id=trace_id, span_id=span_id, parent_span_id=parent,
                    name="GET /tiers" if root else "work",
                    kind=Span.SPAN_KIND_SERVER if root else Span.SPAN_KIND_INTERNAL,
                    start_time_unix_nano=now - 1_000_000, end_time_unix_nano=now,
                    attributes=attributes)
        resource = [KeyValue(key="service.name", value=AnyValue(string_value=self.job)),
                    KeyValue(key="service.instance.id", value=AnyValue(string_value=self.job))]
        request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=Resource(attributes=resource),
            scope_spans=[ScopeSpans(scope=InstrumentationScope(name="tests.collector.test_tiers"),
                                    spans=[span])])])
        self.export(request, timeout=10)

    def close(self) -> None:
        self.channel.close()


def unsampled_trace_id() -> bytes:
    """A random trace id outside the baseline 10% (its low 64 bits start with hex 2-f, the
    baseline pattern needs 0 or 1), so only a policy other than the baseline can keep it."""
    return secrets.token_bytes(8) + bytes([0x20 + secrets.randbelow(0xE0)]) + \
        secrets.token_bytes(7)


def accepted_spans(gateway: Collector) -> float:
    """Spans the gateway's OTLP receiver accepted."""
    return total(gateway.telemetry(), "otelcol_receiver_accepted_spans")


@pytest.fixture
def sampled_tier(tmp_path: Path) -> Iterator[Tier]:
    """An agent and two gateways with the shipped sampling policies, running."""
    with running_tier(tmp_path) as running:
        yield running


@pytest.fixture
def open_tier(tmp_path: Path) -> Iterator[Tier]:
    """An agent and two gateways keeping every trace, running."""
    with running_tier(tmp_path, sample_everything()) as running:
        yield running


# ------------------------------------------------------------------------------ whole traces

TRACES = 40
SPANS = 4  # a root and three children


def test_spans_of_a_trace_sent_apart_meet_on_one_gateway_and_are_sampled_whole(
    sampled_tier: Tier,
) -> None:
    """40 traces of 4 spans, each span in its own export and the rounds a second apart, the
    root last: the 20 traces whose root alone carries soma.sampling.keep arrive complete at
    exactly one gateway's sink, the 20 without it not at all; both gateways took spans, their
    receivers accepted every span once between them, and the agent counted every root."""
    tier = sampled_tier
    service = Service(tier.agent)
    ids = [unsampled_trace_id() for _ in range(TRACES)]
    keep = set(ids[: TRACES // 2])
    spans = {tid: [secrets.token_bytes(8) for _ in range(SPANS)] for tid in ids}
    try:
        for n in range(SPANS - 1, -1, -1):  # children first, the root (index 0) last
            for tid in ids:
                root = n == 0
                service.send(tid, spans[tid][n], b"" if root else spans[tid][0], root,
                             keep=root and tid in keep)
            time.sleep(1.0)  # the workload's shape: a trace's spans in exports a second apart
    finally:
        service.close()
    want = {tid.hex() for tid in keep}
    live.wait_until(
        lambda: [s.spans() for s in tier.sinks],
        lambda per: sum(len(p) for p in per) >= len(keep) * SPANS,
        timeout=60, what=f"{len(keep) * SPANS} spans of kept traces at the sinks")
    # Anything that should not come arrives before the sinks hold still for 3 s.
    arrived = live.settled(lambda: [s.spans() for s in tier.sinks], quiet=3, timeout=60,
                           what="the sinks' spans holding still")
    accepted = [accepted_spans(g) for g in tier.gateways]
    counted = live.wait_until(lambda: red_count(tier.agent, service.job), lambda c: c >= TRACES,
                              timeout=30, what="the agent counting every root")
    where: dict[str, set[int]] = {}
    for n, per in enumerate(arrived):
        for a in per:
            where.setdefault(a.trace_id, set()).add(n)
    per_trace = Counter(a.trace_id for per in arrived for a in per)
    print(f"\n[whole traces] accepted per gateway {accepted}; kept traces per sink "
          f"{[len({a.trace_id for a in per}) for per in arrived]}; agent counted {counted}")
    assert set(per_trace) == want, "a kept trace missing or an unkept one arrived"
    assert all(per_trace[t] == SPANS for t in want), per_trace
    assert all(len(sinks) == 1 for sinks in where.values()), "a trace split over gateways"
    assert sum(accepted) == TRACES * SPANS and min(accepted) > 0, accepted
    assert counted == TRACES


# ------------------------------------------------------------------------------ SIGKILL

LOAD_RATE = 100  # single-span traces a second
KILL_AT, BACK_AT, LOAD_SECONDS = 5.0, 15.0, 25.0


class SpanLoad(BackgroundLoad):
    """A thread sending LOAD_RATE single-span traces (SERVER roots) a second, noting each
    trace id with its send time (monotonic)."""

    def __init__(self, service: Service) -> None:
        super().__init__()
        self.service = service
        self.sent: list[tuple[str, float]] = []
        self.errors = 0

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - start < LOAD_SECONDS + 30:
            tid = unsampled_trace_id()
            try:
                self.service.send(tid, secrets.token_bytes(8), b"", root=True)
                self.sent.append((tid.hex(), time.monotonic()))
            except grpc.RpcError:
                self.errors += 1
            self._stop.wait(max(0.0, start + (len(self.sent) + self.errors) / LOAD_RATE
                                - time.monotonic()))


def test_sigkill_of_one_gateway_under_load_keeps_counts_exact_and_delivers_its_share(
    open_tier: Tier,
) -> None:
    """100 spans/s through the agent; gateway-2 is killed (SIGKILL) after 5 s and started
    again 10 s later: the agent counts every span exactly, every span sent after the kill
    reaches a sink exactly once (gateway-2's share from the agent's queue once it is back),
    gateway-1's sink gets nothing twice, and the spans lost are only spans sent before the
    kill (those gateway-2 had accepted but not exported: reported)."""
    tier = open_tier
    dead, dead_sink = tier.gateways[1], tier.sinks[1]
    service = Service(tier.agent)
    try:
        with SpanLoad(service) as load:
            time.sleep(KILL_AT)
            accepted_before = accepted_spans(dead)
            exported_before = len(dead_sink.spans())
            killed = time.monotonic()
            dead.stop(signal.SIGKILL)
            time.sleep(BACK_AT - KILL_AT)
            dead.start()
            time.sleep(LOAD_SECONDS - BACK_AT)
    finally:
        service.close()
    sent = dict(load.sent)
    counted = live.wait_until(lambda: red_count(tier.agent, service.job),
                              lambda c: c >= len(sent), timeout=30,
                              what=f"the agent counting {len(sent)} spans")
    after_kill = {tid for tid, at in sent.items() if at > killed}
    live.wait_until(lambda: {a.trace_id for s in tier.sinks for a in s.spans()},
                    lambda got: after_kill <= got, timeout=180,
                    what=f"the {len(after_kill)} spans sent after the kill at the sinks",
                    interval=1)
    arrived = live.settled(lambda: [Counter(a.trace_id for a in s.spans()) for s in tier.sinks],
                           quiet=3, timeout=60, what="the sinks' spans holding still")
    got = set(arrived[0]) | set(arrived[1])
    lost = set(sent) - got
    dup = [sum(1 for n in c.values() if n > 1) for c in arrived]
    during = sum(1 for tid in after_kill if tid in arrived[1])
    print(f"\n[gateway SIGKILL] sent {len(sent)} ({load.errors} send errors), agent counted "
          f"{counted:.0f}; sinks {[sum(c.values()) for c in arrived]}, duplicated {dup}; "
          f"gateway-2 had accepted {accepted_before:.0f} and exported {exported_before} a "
          f"moment before the kill; lost {len(lost)} (all sent before the kill); gateway-2's "
          f"share of the spans sent after the kill: {during}")
    assert load.errors == 0
    assert counted == len(sent)
    assert not lost & after_kill
    assert all(sent[tid] <= killed for tid in lost)
    assert dup[0] == 0, "the live gateway got spans twice"
    assert during > 0, "no span of the outage reached the restarted gateway"


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("hostnames", "message"), [
    (None, "no endpoints specified for the static resolver"),
    ("[]", "no endpoints specified for the static resolver"),
    ("{gateway-1: 127.0.0.1:4417}", "'hostnames' source data must be an array or slice, got map"),
], ids=["unset", "empty-list", "a-map"])
def test_agent_without_a_list_of_gateways_does_not_start(
    tmp_path: Path, hostnames: str | None, message: str,
) -> None:
    """SOMA_GATEWAY_HOSTNAMES unset, an empty list, or a map instead of a list: the agent
    exits at start-up with the resolver's error."""
    agent = agent_collector(tmp_path, hostnames or "")
    env = {"PATH": os.environ.get("PATH", ""), **agent.env}
    if hostnames is None:
        del env["SOMA_GATEWAY_HOSTNAMES"]
    done = subprocess.run(agent.argv, capture_output=True, text=True, env=env, timeout=60)
    print(f"\n[{hostnames}] exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    assert done.returncode != 0
    assert message in done.stderr
