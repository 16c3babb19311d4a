"""The agent tier (issue 16, item 1): the per-hop added latency of the agent, how fast it takes
a service's export, and how many bytes a queued span costs on its disk.

What runs
---------
An agent: ``otelcol-soma`` (the stack's build and feature gates) with
``collector-config/agent.yaml`` and an overlay moving its ports to the ``AGENT_PORTS`` block
(26317 OTLP, 26888 own metrics, 26133 health), its persistent queue in the run's scratch
folder. The bench process plays a service: an SDK ``TracerProvider`` with the library's OTLP
exporter (:class:`otel._otlp.SpanExporter`, what the distro installs) ends 20 SERVER spans/s,
each shaped like the FastAPI instrumentation's (route, method, status, URL, client, user agent).

Hop latency
    An OTLP/gRPC trace receiver in this process (:class:`ArrivalReceiver`, 127.0.0.1:27317)
    stands where the gateway tier's receiver is: it notes each span's arrival time, and the
    latency of a span is arrival - its end time (one host, one clock). Direct: the exporter
    sends to the receiver; agent: to the agent, which forwards to the receiver. The gateway
    tier's own processing after arrival is the same either way, so the difference is the
    agent's hop. Two SDK settings: every span exported as it ends (``SimpleSpanProcessor``: the
    transport alone), and the project's default ``BatchSpanProcessor`` (schedule delay 5 s:
    what a service sees).

Export call
    How long the service's exporter thread waits for one export of one span (``span.end()``
    under ``SimpleSpanProcessor``): to the agent (OTLP receiver, memory_limiter, a write into
    the on-disk queue) against the gateway-tier collector itself
    (:class:`bench.common.BenchCollector`, the shipped config.yaml on the bench ports, whose
    receiver returns after redaction, the spanmetrics fan-out and tail sampling). This is what
    decides whether the SDK's queue (2,048 spans) can fill while the agent is up.

Queue bytes
    The agent with nowhere to send (its gateway endpoint a closed port) takes N spans in
    batches of 512; the trace queue's bbolt file is then measured: allocated bytes
    (``st_blocks``) / N, the figure the queue sizing in agent.yaml rests on.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import otel._otlp
from bench.common import (
    BENCH_PORTS,
    REPO,
    BenchCollector,
    Context,
    ProcStat,
    Row,
    Section,
    collector_binary,
    percentile,
    scrape_sum,
    spawn,
    stop,
    timed,
    wait_http,
)
from stack.components import COLLECTOR_FEATURE_GATES

AGENT_CONFIG = REPO / "collector-config" / "agent.yaml"
AGENT_PORTS = {"otlp_grpc": 26317, "otlp_http": 26318, "own_metrics": 26888, "health": 26133}
RECEIVER_PORT = 27317
CLOSED_PORT = 27318  # nothing listens here: the agent's gateway while the queue fills
RATE = 20.0
TRACE_EXPORT = "opentelemetry.proto.collector.trace.v1.TraceService"


# ----------------------------------------------------------------------------- the processes


class Agent:
    """The agent (agent.yaml + a ports overlay) forwarding to ``gateway``; a context manager."""

    def __init__(self, workdir: Path, gateway: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="agent-", dir=workdir))
        self.queue = self.dir / "queue"
        self.gateway = gateway
        self.proc: Any = None

    def __enter__(self) -> Agent:
        p = AGENT_PORTS
        overlay = {
            "extensions": {"health_check": {"endpoint": f"127.0.0.1:{p['health']}"}},
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": f"127.0.0.1:{p['otlp_grpc']}"},
                "http": {"endpoint": f"127.0.0.1:{p['otlp_http']}"}}}},
            "service": {"telemetry": {"metrics": {"readers": [{"pull": {"exporter": {
                "prometheus": {"host": "127.0.0.1", "port": p["own_metrics"]}}}}]}}},
        }
        (self.dir / "ports.yaml").write_text(yaml.safe_dump(overlay))
        env = {"SOMA_GATEWAY_OTLP_ENDPOINT": self.gateway, "SOMA_AGENT_STORAGE": str(self.queue)}
        self.proc = spawn([str(collector_binary()), COLLECTOR_FEATURE_GATES,
                           "--config", str(AGENT_CONFIG), "--config", str(self.dir / "ports.yaml")],
                          self.dir / "agent.log", env)
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


class ArrivalReceiver:
    """An OTLP/gRPC trace receiver that notes, per span, arrival time - end time (seconds)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(TRACE_EXPORT, {
            "Export": grpc.unary_unary_rpc_method_handler(
                self._export, request_deserializer=ExportTraceServiceRequest.FromString,
                response_serializer=ExportTraceServiceResponse.SerializeToString)})
        self._server.add_generic_rpc_handlers((handler,))
        self._server.add_insecure_port(f"127.0.0.1:{port}")

    def _export(self, request: ExportTraceServiceRequest, _: object) -> ExportTraceServiceResponse:
        now = time.time_ns()
        ends = [span.end_time_unix_nano for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans]
        with self._lock:
            self.latencies += [(now - end) / 1e9 for end in ends]
        return ExportTraceServiceResponse()

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
    with Agent(ctx.workdir, f"127.0.0.1:{CLOSED_PORT}") as agent:
        exporter = _exporter(agent.endpoint)
        sent = 0
        while sent < spans:
            exporter.export(batch)
            sent += len(batch)
        exporter.shutdown()
        deadline = time.monotonic() + 60
        while (agent.metric("otelcol_exporter_queue_size", data_type="traces") < sent
               and time.monotonic() < deadline):
            time.sleep(0.5)
        queued = agent.metric("otelcol_exporter_queue_size", data_type="traces")
        if queued < sent:
            raise RuntimeError(f"the agent queued {queued:.0f} of {sent} spans")
        rss = ProcStat(agent.proc.pid).rss_bytes() / 2**20
        heap = agent.metric("otelcol_process_runtime_heap_alloc_bytes") / 2**20
        (traces,) = [p for p in agent.queue.iterdir() if p.name.endswith("_traces")]
        stat = traces.stat()
        ctx.log(f"  queue: {sent} spans, file {stat.st_size} B, allocated "
                f"{stat.st_blocks * 512} B, agent RSS {rss:.0f} MiB, Go heap {heap:.0f} MiB")
        return stat.st_blocks * 512 / sent, stat.st_size / sent, rss, heap


@contextlib.contextmanager
def _gateway(ctx: Context) -> Iterator[str]:
    with BenchCollector(ctx.workdir, "agent-gateway"):
        yield f"127.0.0.1:{BENCH_PORTS['otlp_grpc']}"


def run(ctx: Context) -> Section:
    """Hop latency (two SDK settings), export call durations, queue bytes per span."""
    sec = Section("agent", "Agent tier: per-hop added latency and queue cost")
    seconds = 5.0 if ctx.smoke else 30.0
    fill = 20_480 if ctx.smoke else 204_800
    with timed(sec):
        with ArrivalReceiver(RECEIVER_PORT) as receiver, \
                Agent(ctx.workdir, f"127.0.0.1:{RECEIVER_PORT}") as agent:
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
                "to the gateway-tier collector (config.yaml)"),
            Row("SDK export call of one span to the agent, p99",
                percentile(to_agent, 0.99) * 1e3, "ms", percentile(to_gateway, 0.99) * 1e3,
                "to the gateway-tier collector (config.yaml)"),
            Row("SDK export call of one span to the agent, max",
                max(to_agent) * 1e3, "ms", max(to_gateway) * 1e3,
                "to the gateway-tier collector (config.yaml)"),
            Row("agent CPU per export of one span (20 exports/s)",
                agent_cpu / len(to_agent) * 1e6, "us"),
            Row("agent queue on disk per span (allocated)", per_span, "B", apparent,
                "apparent file size per span"),
            Row(f"agent RSS with {fill:,} spans queued (counts the mapped queue file)", rss,
                "MiB"),
            Row(f"agent Go heap with {fill:,} spans queued (what memory_limiter limits)", heap,
                "MiB"),
        ]
        added = p("agent", False, 0.5) - p("direct", False, 0.5)
        sec.notes += [
            f"Per-hop added latency of the agent (p50, span exported as it ends): {added:.0f} ms. "
            "It is the agent's batching (sending_queue.batch flush_timeout 200 ms: at 20 spans/s "
            "min_size 1,024 is never reached, so every batch leaves on the timeout) plus the "
            "write into and the read from the on-disk queue. With the SDK's own batching (5 s "
            "schedule delay) a span already waits 0-5 s in the service, so the agent adds a "
            "small fraction to what reaches the gateway tier (third and fourth rows), and "
            "nothing to the request: the service's exporter thread pays only the export call.",
            "The export call rows are what the service's exporter thread waits per export. The "
            "agent answers once the data is in its on-disk queue; the gateway-tier collector "
            "answers after its synchronous pipeline (redaction, the spanmetrics fan-out, tail "
            "sampling). The SDK drops spans only when its queue (OTEL_BSP_MAX_QUEUE_SIZE 2,048) "
            "fills while an export is in progress: at the agent's export times that would take "
            "thousands of spans per second per process.",
            f"The queue sizing in collector-config/agent.yaml (360,000 items a signal) rests on "
            f"the queue-bytes row: {fill:,} FastAPI-shaped spans (10 attributes, exported in "
            f"batches of 512) took {per_span:.0f} B a span on disk.",
            "The receiver standing in for the gateway tier is an OTLP/gRPC server in the bench "
            "process (arrival = the time its handler runs); the gateway tier's own processing "
            "after arrival is the same with and without the agent. The machine's 2 cores are "
            "shared with whatever else runs: compare the ratios, not the milliseconds.",
        ]
        sec.commands.append(
            f"SOMA_GATEWAY_OTLP_ENDPOINT=127.0.0.1:{RECEIVER_PORT} SOMA_AGENT_STORAGE=<dir> "
            f"{collector_binary()} {COLLECTOR_FEATURE_GATES} --config collector-config/agent.yaml "
            "--config <ports overlay>")
    return sec
