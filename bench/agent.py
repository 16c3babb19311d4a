"""The agent and gateway tiers (issue 16): the per-hop added latency of the agent, how fast it
takes a service's export, how many bytes a queued span costs on its disk, and the gateway
tier's spans/s per core with load balancing on.

What runs
---------
An agent: ``otelcol-soma`` (the newest cached build and the feature gates) with
``collector-config/config.yaml`` + ``agent.yaml`` + ``agent-local.yaml`` and an overlay moving
its ports to the ``AGENT_PORTS`` block (26317 OTLP, 26889 Prometheus exporter, 26888 own
metrics, 26133 health) and its Jaeger, Zipkin, VictoriaLogs and Kafka endpoints to a closed
port; its persistent queues (SOMA_STACK_DATA) in the run's scratch folder;
SOMA_GATEWAY_HOSTNAMES names the "gateway tier" of each measurement. The bench process plays a
service: an SDK ``TracerProvider`` with the library's OTLP exporter
(:class:`otel._otlp.SpanExporter`, what the distro installs) ends 20 SERVER spans/s, each
shaped like the FastAPI instrumentation's (route, method, status, URL, client, user agent).

Hop latency
    An OTLP/gRPC trace receiver in this process (:class:`ArrivalReceiver`, 127.0.0.1:27317) is
    the agent's only gateway: it notes each span's arrival time, and the latency of a span is
    arrival - its end time (one host, one clock). Direct: the exporter sends to the receiver;
    agent: to the agent (redaction, spanmetrics, then the loadbalancing exporter's disk queue),
    which forwards to the receiver. Two SDK settings: every span exported as it ends
    (``SimpleSpanProcessor``: the transport alone), and the project's default
    ``BatchSpanProcessor`` (schedule delay 5 s: what a service sees).

Export call
    How long the service's exporter thread waits for one export of one span (``span.end()``
    under ``SimpleSpanProcessor``): to the agent against the single collector of the default
    stack (:class:`bench.common.BenchCollector`, config.yaml alone on the bench ports, whose
    receiver returns after redaction, the spanmetrics fan-out and tail sampling). This decides
    whether the SDK's queue (2,048 spans) can fill while the agent is up.

Queue bytes
    The agent with nowhere to send (its one gateway a closed port) takes N spans in batches of
    512; the loadbalancing exporter's bbolt file is then measured: allocated bytes
    (``st_blocks``) / N, the figure the queue sizing in agent.yaml rests on.

Gateway tier
    Two gateway collectors (``collector-config/gateway.yaml``: OTLP in, tail sampling with the
    shipped policies, Jaeger's exporter pointed at the bench's sink collector, Zipkin left out
    of the pipeline) on the ``GATEWAY_PORTS`` blocks, the agent load-balancing to them by trace
    ID; telemetrygen (:func:`bench.collector.telemetrygen`, 10-span traces) offers
    ``TIER_RATE`` spans/s to the agent. Spans/s per core = spans the two gateways' receivers
    accepted / the CPU-seconds of the two gateway processes (``/proc``), and the agent's own
    CPU per span beside it.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import otel._otlp
from bench.collector import telemetrygen, tg_command
from bench.common import (
    BENCH_PORTS,
    REPO,
    SINK_PORTS,
    BenchCollector,
    Context,
    ProcStat,
    Row,
    Section,
    collector_binary,
    otlp_trace_server,
    percentile,
    scrape_sum,
    sink_config,
    spawn,
    stop,
    timed,
    wait_http,
)
from stack.components import COLLECTOR_FEATURE_GATES

CONFIGS = [REPO / "collector-config" / name
           for name in ("config.yaml", "agent.yaml", "agent-local.yaml")]
GATEWAY_CONFIG = REPO / "collector-config" / "gateway.yaml"
AGENT_PORTS = {"otlp_grpc": 26317, "otlp_http": 26318, "own_metrics": 26888, "health": 26133,
               "prom_exporter": 26889}
#: The two gateway collectors of the tier measurement: OTLP/gRPC, health, own metrics.
GATEWAY_PORTS = ({"otlp_grpc": 26417, "health": 26134, "own_metrics": 26898},
                 {"otlp_grpc": 26517, "health": 26135, "own_metrics": 26899})
LB_EXPORTER = "loadbalancing/gateway"
TIER_RATE = 4_000  # spans/s offered to the agent (below the single collector's knee)
RECEIVER_PORT = 27317
CLOSED_PORT = 27318  # nothing listens here: the agent's gateway while the queue fills
RATE = 20.0


# ----------------------------------------------------------------------------- the processes


class Agent:
    """The agent (config.yaml + agent.yaml + agent-local.yaml + a ports overlay) in front of
    ``gateways`` (host:port each); a context manager."""

    def __init__(self, workdir: Path, gateways: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="agent-", dir=workdir))
        self.queue = self.dir / "otel-collector" / "queues"
        self.gateways = gateways
        self.proc: Any = None

    def __enter__(self) -> Agent:
        p = AGENT_PORTS
        closed = f"127.0.0.1:{CLOSED_PORT}"
        overlay = {
            "extensions": {"health_check": {"endpoint": f"127.0.0.1:{p['health']}"}},
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": f"127.0.0.1:{p['otlp_grpc']}"},
                "http": {"endpoint": f"127.0.0.1:{p['otlp_http']}"}}}},
            "exporters": {
                "prometheus": {"endpoint": f"127.0.0.1:{p['prom_exporter']}"},
                "otlp_grpc/jaeger": {"endpoint": closed},
                "zipkin": {"endpoint": f"http://{closed}/api/v2/spans"},
                "otlp_http/victorialogs": {"logs_endpoint": f"http://{closed}/v1/logs"}},
            "service": {"telemetry": {"metrics": {"readers": [{"pull": {"exporter": {
                "prometheus": {"host": "127.0.0.1", "port": p["own_metrics"]}}}}]}}},
        }
        (self.dir / "ports.yaml").write_text(yaml.safe_dump(overlay))
        env = {"SOMA_STACK_DATA": str(self.dir), "KAFKA_BOOTSTRAP": closed,
               "SOMA_GATEWAY_HOSTNAMES": "[" + ",".join(self.gateways) + "]"}
        argv = [str(collector_binary()), COLLECTOR_FEATURE_GATES]
        for config in (*CONFIGS, self.dir / "ports.yaml"):
            argv += ["--config", str(config)]
        self.proc = spawn(argv, self.dir / "agent.log", env)
        wait_http(f"http://127.0.0.1:{p['health']}/", 60, self.proc, self.dir / "agent.log")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{AGENT_PORTS['otlp_grpc']}"

    def metric(self, name: str, **match: str) -> float:
        """One of its own counters or gauges (with or without ``_total``)."""
        url = f"http://127.0.0.1:{AGENT_PORTS['own_metrics']}/metrics"
        return scrape_sum(url, name, match) + scrape_sum(url, name + "_total", match)


class GatewayTier:
    """The bench's sink collector and two gateway collectors (gateway.yaml) sending to it;
    a context manager."""

    def __init__(self, workdir: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gateways-", dir=workdir))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sink: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GatewayTier:
        binary = str(collector_binary())
        (self.dir / "sink.yaml").write_text(yaml.safe_dump(sink_config()))
        self.sink = spawn([binary, "--config", str(self.dir / "sink.yaml")],
                          self.dir / "sink.log")
        wait_http(f"http://127.0.0.1:{SINK_PORTS['health']}/", 30, self.sink,
                  self.dir / "sink.log")
        overlay = {
            "exporters": {"otlp_grpc/jaeger": {"endpoint": f"127.0.0.1:{SINK_PORTS['otlp_grpc']}"}},
            "service": {"pipelines": {"traces": {"exporters": ["otlp_grpc/jaeger"]}}},
        }
        (self.dir / "sink-overlay.yaml").write_text(yaml.safe_dump(overlay))
        for n, ports in enumerate(GATEWAY_PORTS, start=1):
            env = {"SOMA_GATEWAY_OTLP_GRPC": f"127.0.0.1:{ports['otlp_grpc']}",
                   "SOMA_GATEWAY_HEALTH": f"127.0.0.1:{ports['health']}",
                   "SOMA_GATEWAY_TELEMETRY_PORT": str(ports["own_metrics"]),
                   "GOMAXPROCS": "2"}
            log = self.dir / f"gateway-{n}.log"
            proc = spawn([binary, COLLECTOR_FEATURE_GATES, "--config", str(GATEWAY_CONFIG),
                          "--config", str(self.dir / "sink-overlay.yaml")], log, env)
            self.procs.append(proc)
            wait_http(f"http://127.0.0.1:{ports['health']}/", 60, proc, log)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in (*self.procs, self.sink):
            if proc is not None:
                stop(proc)

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p['otlp_grpc']}" for p in GATEWAY_PORTS]

    def cpu_seconds(self) -> list[float]:
        """CPU-seconds of each gateway process so far."""
        return [ProcStat(proc.pid).cpu_seconds() for proc in self.procs]

    def accepted(self) -> list[float]:
        """Spans each gateway's receiver accepted so far."""
        out = []
        for ports in GATEWAY_PORTS:
            url = f"http://127.0.0.1:{ports['own_metrics']}/metrics"
            out.append(scrape_sum(url, "otelcol_receiver_accepted_spans")
                       + scrape_sum(url, "otelcol_receiver_accepted_spans_total"))
        return out


class ArrivalReceiver:
    """An OTLP/gRPC trace receiver that notes, per span, arrival time - end time (seconds)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._server = otlp_trace_server(port, self._export)

    def _export(self, request: ExportTraceServiceRequest) -> None:
        now = time.time_ns()
        ends = [span.end_time_unix_nano for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans]
        with self._lock:
            self.latencies += [(now - end) / 1e9 for end in ends]

    def reset(self) -> None:
        with self._lock:
            self.latencies = []

    def count(self) -> int:
        with self._lock:
            return len(self.latencies)

    def __enter__(self) -> ArrivalReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=1).wait()


# ----------------------------------------------------------------------------- the service side


RESOURCE = Resource.create({"service.name": "bench-agent", "service.version": "0.1.0",
                            "service.instance.id": "bench-agent-1",
                            "deployment.environment": "LOCAL"})


def _server_span(provider: TracerProvider, n: int) -> None:
    """One span shaped like the FastAPI instrumentation's SERVER span."""
    attributes: dict[str, str | int] = {
        "http.request.method": "GET", "http.route": "/items/{item_id}",
        "http.response.status_code": 200, "url.path": f"/items/{n}", "url.scheme": "http",
        "server.address": "127.0.0.1", "server.port": 8013, "client.address": "127.0.0.1",
        "client.port": 50000 + n % 10000, "network.protocol.version": "1.1",
        "user_agent.original": "Python-urllib/3.11"}
    provider.get_tracer("opentelemetry.instrumentation.fastapi", "0.66b1").start_span(
        "GET /items/{item_id}", kind=SpanKind.SERVER, attributes=attributes).end()


def _exporter(endpoint: str) -> otel._otlp.SpanExporter:
    return otel._otlp.SpanExporter(endpoint=endpoint, insecure=True)


def drive(endpoint: str, seconds: float, batched: bool) -> tuple[int, list[float]]:
    """End RATE spans/s for ``seconds`` into an exporter to ``endpoint``; returns the span
    count and, unbatched, each ``span.end()`` duration (the synchronous export)."""
    provider = TracerProvider(resource=RESOURCE)
    exporter = _exporter(endpoint)
    processor: SpanProcessor = (otel._otlp.EncodingBatchSpanProcessor(exporter) if batched
                                else SimpleSpanProcessor(exporter))
    provider.add_span_processor(processor)
    durations: list[float] = []
    count = round(seconds * RATE)
    start = time.monotonic()
    for n in range(count):
        t0 = time.perf_counter()
        _server_span(provider, n)
        durations.append(time.perf_counter() - t0)
        time.sleep(max(0.0, start + (n + 1) / RATE - time.monotonic()))
    provider.shutdown()  # flushes the batch processor
    return count, ([] if batched else durations)


def hop(receiver: ArrivalReceiver, endpoint: str, seconds: float,
        batched: bool) -> list[float]:
    """Span end -> arrival latencies at ``receiver`` for spans exported to ``endpoint``."""
    receiver.reset()
    count, _ = drive(endpoint, seconds, batched)
    deadline = time.monotonic() + 60
    while receiver.count() < count and time.monotonic() < deadline:
        time.sleep(0.1)
    if receiver.count() != count:
        raise RuntimeError(f"{receiver.count()} of {count} spans arrived")
    return list(receiver.latencies)


def queue_bytes_per_span(ctx: Context, spans: int) -> tuple[float, float, float, float]:
    """Fill an agent whose gateway is unreachable with ``spans`` spans; returns allocated
    bytes/span, apparent bytes/span of the trace queue file, and the agent's RSS and Go heap
    in MiB (the queue file is mapped into memory: RSS counts its pages, memory_limiter only
    the heap)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for n in range(512):
        _server_span(provider, n)
    batch: tuple[ReadableSpan, ...] = memory.get_finished_spans()
    with Agent(ctx.workdir, [f"127.0.0.1:{CLOSED_PORT}"]) as agent:
        exporter = _exporter(agent.endpoint)
        sent = 0
        while sent < spans:
            exporter.export(batch)
            sent += len(batch)
        exporter.shutdown()
        deadline = time.monotonic() + 60
        while (agent.metric("otelcol_exporter_queue_size", exporter=LB_EXPORTER) < sent
               and time.monotonic() < deadline):
            time.sleep(0.5)
        queued = agent.metric("otelcol_exporter_queue_size", exporter=LB_EXPORTER)
        if queued < sent:
            raise RuntimeError(f"the agent queued {queued:.0f} of {sent} spans")
        rss = ProcStat(agent.proc.pid).rss_bytes() / 2**20
        heap = agent.metric("otelcol_process_runtime_heap_alloc_bytes") / 2**20
        (traces,) = [p for p in agent.queue.iterdir() if "loadbalancing" in p.name]
        stat = traces.stat()
        ctx.log(f"  queue: {sent} spans, file {stat.st_size} B, allocated "
                f"{stat.st_blocks * 512} B, agent RSS {rss:.0f} MiB, Go heap {heap:.0f} MiB")
        return stat.st_blocks * 512 / sent, stat.st_size / sent, rss, heap


@contextlib.contextmanager
def _gateway(ctx: Context) -> Iterator[str]:
    with BenchCollector(ctx.workdir, "agent-gateway"):
        yield f"127.0.0.1:{BENCH_PORTS['otlp_grpc']}"


@dataclass
class TierLoad:
    """What the gateway tier did with ``seconds`` of telemetrygen load through the agent."""

    offered: float        # spans/s
    seconds: float
    accepted: list[float]  # spans per gateway
    gateway_cpu: list[float]  # CPU-seconds per gateway
    agent_cpu: float      # CPU-seconds of the agent

    @property
    def per_core(self) -> float:
        """Gateway-tier spans per CPU-second (both gateways)."""
        return sum(self.accepted) / sum(self.gateway_cpu)


def gateway_tier(ctx: Context, seconds: float) -> TierLoad:
    """telemetrygen -> agent -> two gateways (load balanced by trace ID) for ``seconds``."""
    binary = telemetrygen()
    with GatewayTier(ctx.workdir) as tier, Agent(ctx.workdir, tier.endpoints) as agent:
        argv = tg_command(binary, TIER_RATE, seconds)
        argv[argv.index("--otlp-endpoint") + 1] = agent.endpoint
        a0, c0, g0 = tier.accepted(), tier.cpu_seconds(), ProcStat(agent.proc.pid).cpu_seconds()
        with (tier.dir / "telemetrygen.log").open("ab") as out:
            subprocess.run(argv, stdout=out, stderr=out, timeout=seconds + 60, check=False)
        sent = agent.metric("otelcol_receiver_accepted_spans")
        deadline = time.monotonic() + 60
        while sum(tier.accepted()) - sum(a0) < sent and time.monotonic() < deadline:
            time.sleep(0.5)
        accepted = [b - a for a, b in zip(a0, tier.accepted(), strict=True)]
        cpu = [b - a for a, b in zip(c0, tier.cpu_seconds(), strict=True)]
        agent_cpu = ProcStat(agent.proc.pid).cpu_seconds() - g0
        ctx.log(f"  gateway tier: agent took {sent:.0f} spans, gateways accepted {accepted}, "
                f"gateway CPU {cpu} s, agent CPU {agent_cpu:.1f} s")
        if sum(accepted) < sent:
            raise RuntimeError(f"the gateways accepted {sum(accepted):.0f} of {sent:.0f} spans")
        return TierLoad(TIER_RATE, seconds, accepted, cpu, agent_cpu)


def run(ctx: Context) -> Section:
    """Hop latency (two SDK settings), export call durations, queue bytes per span, gateway
    tier spans/s per core with load balancing on."""
    sec = Section("agent", "Agent and gateway tiers: per-hop added latency, queue cost, "
                           "gateway-tier spans/s per core")
    seconds = 5.0 if ctx.smoke else 30.0
    fill = 20_480 if ctx.smoke else 204_800
    with timed(sec):
        with ArrivalReceiver(RECEIVER_PORT) as receiver, \
                Agent(ctx.workdir, [f"127.0.0.1:{RECEIVER_PORT}"]) as agent:
            hop(receiver, agent.endpoint, 1.0, batched=False)  # connections up, not reported
            results: dict[tuple[str, bool], list[float]] = {}
            for batched in (False, True):
                for path, endpoint in (("direct", f"127.0.0.1:{RECEIVER_PORT}"),
                                       ("agent", agent.endpoint)):
                    results[path, batched] = hop(receiver, endpoint, seconds, batched)
                    lat = results[path, batched]
                    ctx.log(f"  {path:6} batched={batched}: p50 {percentile(lat, 0.5)*1e3:.1f} "
                            f"ms p99 {percentile(lat, 0.99)*1e3:.1f} ms ({len(lat)} spans)")
            agent_cpu = ProcStat(agent.proc.pid).cpu_seconds()
            _, to_agent = drive(agent.endpoint, seconds, batched=False)
            agent_cpu = ProcStat(agent.proc.pid).cpu_seconds() - agent_cpu
        with _gateway(ctx) as gateway:
            drive(gateway, 1.0, batched=False)  # warm-up
            _, to_gateway = drive(gateway, seconds, batched=False)
        per_span, apparent, rss, heap = queue_bytes_per_span(ctx, fill)
        load = gateway_tier(ctx, seconds)

        def p(path: str, batched: bool, q: float) -> float:
            return percentile(results[path, batched], q) * 1e3

        sec.rows += [
            Row("span end -> gateway-tier receiver via the agent, p50 (span exported as it ends)",
                p("agent", False, 0.5), "ms", p("direct", False, 0.5), "direct to the receiver"),
            Row("span end -> gateway-tier receiver via the agent, p99 (span exported as it ends)",
                p("agent", False, 0.99), "ms", p("direct", False, 0.99), "direct to the receiver"),
            Row("span end -> gateway-tier receiver via the agent, p50 (SDK batch, 5 s delay)",
                p("agent", True, 0.5), "ms", p("direct", True, 0.5), "direct to the receiver"),
            Row("span end -> gateway-tier receiver via the agent, p99 (SDK batch, 5 s delay)",
                p("agent", True, 0.99), "ms", p("direct", True, 0.99), "direct to the receiver"),
            Row("SDK export call of one span to the agent, p50",
                percentile(to_agent, 0.5) * 1e3, "ms", percentile(to_gateway, 0.5) * 1e3,
                "to the single collector (config.yaml alone)"),
            Row("SDK export call of one span to the agent, p99",
                percentile(to_agent, 0.99) * 1e3, "ms", percentile(to_gateway, 0.99) * 1e3,
                "to the single collector (config.yaml alone)"),
            Row("SDK export call of one span to the agent, max",
                max(to_agent) * 1e3, "ms", max(to_gateway) * 1e3,
                "to the single collector (config.yaml alone)"),
            Row("agent CPU per export of one span (20 exports/s)",
                agent_cpu / len(to_agent) * 1e6, "us"),
            Row("agent queue on disk per span (allocated)", per_span, "B", apparent,
                "apparent file size per span"),
            Row(f"agent RSS with {fill:,} spans queued (counts the mapped queue file)", rss,
                "MiB"),
            Row(f"agent Go heap with {fill:,} spans queued (what memory_limiter limits)", heap,
                "MiB"),
            Row(f"gateway tier spans/s per core, load balancing on (2 gateways, "
                f"{TIER_RATE:,} spans/s offered)", load.per_core, "spans/s/core"),
            Row("gateway tier CPU per span (both gateways)",
                sum(load.gateway_cpu) / sum(load.accepted) * 1e6, "us",
                load.agent_cpu / sum(load.accepted) * 1e6,
                "the agent's CPU per span (redaction, spanmetrics, load balancer)"),
            Row("share of spans on the busier gateway", max(load.accepted) / sum(load.accepted),
                "ratio", 0.5, "an even split"),
        ]
        added = p("agent", False, 0.5) - p("direct", False, 0.5)
        sec.notes += [
            f"Per-hop added latency of the agent (p50, span exported as it ends): {added:.0f} ms. "
            "It is the agent's batching (the loadbalancing exporter's sending_queue.batch "
            "flush_timeout 200 ms: at 20 spans/s min_size 1,024 is never reached, so every "
            "batch leaves on the timeout) plus the write into and the read from the on-disk "
            "queue. With the SDK's own batching (5 s schedule delay) a span already waits 0-5 s "
            "in the service, so the agent adds a small fraction to what reaches the gateway tier "
            "(third and fourth rows), and nothing to the request: the service's exporter thread "
            "pays only the export call.",
            "The export call rows are what the service's exporter thread waits per export. The "
            "agent runs config.yaml's synchronous pipelines (redaction, the spanmetrics fan-out) "
            "and answers once the spans bound for the gateway tier are in its on-disk queue; "
            "the single collector answers after redaction, the fan-out and tail sampling. The "
            "SDK drops spans only when its queue (OTEL_BSP_MAX_QUEUE_SIZE 2,048) fills while an "
            "export is in progress: at these export times that would take thousands of spans "
            "per second per process.",
            f"The queue sizing in collector-config/agent.yaml (360,000 spans) rests on the "
            f"queue-bytes row: {fill:,} FastAPI-shaped spans (10 attributes, exported in batches "
            f"of 512) took {per_span:.0f} B a span on disk.",
            f"Gateway tier: telemetrygen offered {TIER_RATE:,} spans/s (10-span traces) for "
            f"{load.seconds:.0f} s to the agent, which load-balanced them by trace ID to two "
            "gateway.yaml collectors (tail sampling with the shipped policies; kept traces to "
            "a sink collector). Per core = spans the gateways' receivers accepted / the "
            f"gateways' own CPU-seconds: {sum(load.accepted):,.0f} spans, "
            f"{sum(load.gateway_cpu):.1f} CPU-s. The agent, the gateways and telemetrygen share "
            "the same cores.",
            "The receiver standing in for the gateway tier in the latency rows is an OTLP/gRPC "
            "server in the bench process (arrival = the time its handler runs). The machine's "
            "cores are shared with whatever else runs: compare the ratios, not the "
            "milliseconds.",
        ]
        sec.commands += [
            f"SOMA_STACK_DATA=<dir> KAFKA_BOOTSTRAP=<closed> SOMA_GATEWAY_HOSTNAMES="
            f"[127.0.0.1:{RECEIVER_PORT}] {collector_binary()} {COLLECTOR_FEATURE_GATES} "
            "--config collector-config/config.yaml --config collector-config/agent.yaml "
            "--config collector-config/agent-local.yaml --config <ports overlay>",
            f"SOMA_GATEWAY_OTLP_GRPC=127.0.0.1:{GATEWAY_PORTS[0]['otlp_grpc']} "
            f"SOMA_GATEWAY_HEALTH=127.0.0.1:{GATEWAY_PORTS[0]['health']} "
            f"SOMA_GATEWAY_TELEMETRY_PORT={GATEWAY_PORTS[0]['own_metrics']} {collector_binary()} "
            f"{COLLECTOR_FEATURE_GATES} --config collector-config/gateway.yaml --config "
            "<sink overlay> (and the second on GATEWAY_PORTS[1])",
        ]
    return sec
