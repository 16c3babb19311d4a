"""Shared pieces of the benchmarks: results, process sampling, the second collector, HTTP helpers.

Results
-------
Every benchmark module has ``run(ctx: Context) -> Section``. A :class:`Section` holds
:class:`Row` s (one figure each: value, unit, the baseline measured in the same run and their
ratio, the target when the issue sets one), free-form markdown notes (how each figure follows
from the configuration) and the exact commands. :mod:`bench.report` turns them into
``docs/benchmarks.md`` and a JSON file.

Processes
---------
:class:`ProcStat` reads CPU seconds (``/proc/<pid>/stat`` utime+stime, children excluded) and
RSS (``/proc/<pid>/status`` VmRSS) of one process; :func:`spawn` starts a process group with
its output in a log file, and :func:`stop` ends exactly that group (SIGTERM, then SIGKILL).

The second collector
--------------------
:class:`BenchCollector` runs ``otelcol-soma`` (the stack's cached build) with a config derived
from ``collector-config/config.yaml``: identical pipelines, but every listening port moved to
the ``BENCH_PORTS`` block (24317/24318 OTLP, 28889 Prometheus exporter, 28888 own metrics,
23133 health), the file-storage queues in a temporary folder, and the Jaeger and VictoriaLogs
exporters pointed at a sink collector (:func:`sink_config`, OTLP in, ``debug`` out, on
25317/25318) so that the shared Jaeger and VictoriaLogs see none of the load. Overrides (e.g.
tail sampling's ``num_traces``) are applied with :func:`set_path`. The shared collector on
4317/4318 is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from stack.components import COLLECTOR_FEATURE_GATES

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
PY = str(VENV_BIN / "python")
SOMA_CACHE = Path(os.environ.get("SOMA_CACHE", str(Path.home() / ".cache" / "somaagent-stack")))
COLLECTOR_CONFIG = REPO / "collector-config" / "config.yaml"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Shared stack endpoints (docs/conventions.md).
OTLP_GRPC = "http://127.0.0.1:4317"
PROMETHEUS = "http://127.0.0.1:9090"
JAEGER = "http://127.0.0.1:16686"
VICTORIALOGS = "http://127.0.0.1:9428"
KAFKA = "127.0.0.1:9092"

#: Ports of the benchmark's own collector and its sink (all on 127.0.0.1).
BENCH_PORTS = {"otlp_grpc": 24317, "otlp_http": 24318, "prom_exporter": 28889,
               "own_metrics": 28888, "health": 23133}
SINK_PORTS = {"otlp_grpc": 25317, "otlp_http": 25318, "own_metrics": 25888, "health": 25133}


@dataclass
class Row:
    """One figure: ``value`` against ``baseline`` (same run); ``ratio`` = value / baseline."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """``value / baseline`` (None without a usable baseline)."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON object, ratio included."""
        return {**asdict(self), "ratio": self.ratio}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        """The row :meth:`to_json` wrote (the ratio is derived again)."""
        return cls(**{k: v for k, v in data.items() if k != "ratio"})


@dataclass
class Section:
    """One benchmark's results."""

    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """The section as a JSON object."""
        return {"key": self.key, "title": self.title, "rows": [r.to_json() for r in self.rows],
                "notes": self.notes, "commands": self.commands, "tables": self.tables,
                "seconds": self.seconds, "error": self.error}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Section:
        """The section :meth:`to_json` wrote."""
        return cls(**{**data, "rows": [Row.from_json(r) for r in data["rows"]]})


@dataclass
class Context:
    """What every benchmark gets: smoke or full, and a scratch folder for this run."""

    smoke: bool
    workdir: Path
    log: Any = print


def machine() -> dict[str, Any]:
    """nproc, memory, CPU model, kernel and Python of this machine."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {"nproc": os.cpu_count() or 0, "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg()[0]}


# --------------------------------------------------------------------------- processes


class ProcStat:
    """CPU seconds and RSS of one process, read from ``/proc``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        """utime + stime of the process (its threads included, children excluded)."""
        raw = Path(f"/proc/{self.pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self) -> int:
        """Resident set size in bytes (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


class RssPeak:
    """The peak RSS of a process while a ``with`` block runs, sampled every 0.5 s.

    ``with RssPeak(stat) as rss: ...`` then ``rss.peak_bytes``; with ``stat`` None it stays 0.
    """

    def __init__(self, stat: ProcStat | None) -> None:
        self._stat = stat
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_bytes = stat.rss_bytes() if stat else 0

    def _sample(self) -> None:
        while self._stat and not self._done.wait(0.5):
            self.peak_bytes = max(self.peak_bytes, self._stat.rss_bytes())

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
          cwd: Path = REPO) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, stdout+stderr to ``log_path``."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = log_path.open("ab")
    try:
        return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                cwd=cwd, start_new_session=True)
    finally:
        out.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """End ``proc``'s process group (the one :func:`spawn` made): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None,
              log_path: Path | None = None) -> None:
    """Wait until ``url`` answers 2xx; raise with the log's tail if ``proc`` dies or on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text()[-2000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"process exited ({proc.returncode}) before {url} answered:\n{tail}")
        with (contextlib.suppress(OSError, urllib.error.URLError),
              urllib.request.urlopen(url, timeout=2) as resp):
            if 200 <= resp.status < 300:
                return
        time.sleep(0.2)
    tail = log_path.read_text()[-2000:] if log_path and log_path.exists() else ""
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s\n{tail}")


def http_get(url: str, params: Mapping[str, str] | None = None, timeout: float = 5.0) -> bytes:
    """GET ``url`` (with query ``params``) and return the body."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
        return body


def prom_query(expr: str, base: str = PROMETHEUS) -> list[dict[str, Any]]:
    """Instant query against Prometheus; the ``result`` vector."""
    data = json.loads(http_get(f"{base}/api/v1/query", {"query": expr}))
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def scrape_sum(url: str, metric: str, match: Mapping[str, str] | None = None) -> float:
    """Sum of every sample of ``metric`` (label subset ``match``) in a Prometheus text page."""
    total = 0.0
    for line in http_get(url).decode().splitlines():
        if not line.startswith(metric):
            continue
        name_end = len(metric)
        if len(line) > name_end and line[name_end] not in "{ ":
            continue
        if match and not all(f'{k}="{v}"' in line for k, v in match.items()):
            continue
        with contextlib.suppress(ValueError, IndexError):
            total += float(line.rsplit(" ", 1)[1] if "}" not in line
                           else line[line.rindex("}") + 1:].split()[0])
    return total


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linear interpolation; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --------------------------------------------------------------------------- collectors


def collector_binary() -> Path:
    """The stack's cached ``otelcol-soma`` (newest build folder)."""
    found = sorted(SOMA_CACHE.glob("otelcol/*/otelcol-soma"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"no otelcol-soma under {SOMA_CACHE}/otelcol (run stack/stack up)")
    return found[-1]


def set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``dotted`` = ``"a/b/c"`` (slash-separated keys)."""
    keys = dotted.split("/")
    node = config
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value


def bench_config(storage_dir: Path, overrides: Mapping[str, Any] | None = None,
                 passthrough: bool = False, redaction: bool = True) -> dict[str, Any]:
    """The shared collector's config with the bench ports and sink exporters (module docstring).

    ``passthrough`` replaces the trace pipelines by ``otlp -> memory_limiter -> batch -> sink``,
    the baseline the full pipeline's per-core throughput is compared to. ``redaction=False``
    takes the redaction processors (``transform/redact_*``) out of every pipeline.
    """
    cfg: dict[str, Any] = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    p, s = BENCH_PORTS, SINK_PORTS
    cfg["extensions"]["health_check"]["endpoint"] = f"127.0.0.1:{p['health']}"
    cfg["extensions"]["file_storage/queues"]["directory"] = str(storage_dir)
    cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = f"127.0.0.1:{p['otlp_grpc']}"
    cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"] = f"127.0.0.1:{p['otlp_http']}"
    cfg["exporters"]["prometheus"]["endpoint"] = f"127.0.0.1:{p['prom_exporter']}"
    cfg["exporters"]["otlp_grpc/jaeger"]["endpoint"] = f"127.0.0.1:{s['otlp_grpc']}"
    cfg["exporters"]["otlp_http/victorialogs"]["logs_endpoint"] = (
        f"http://127.0.0.1:{s['otlp_http']}/v1/logs")
    reader = cfg["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    reader["prometheus"]["port"] = p["own_metrics"]
    # Kept traces go to the sink only: the stack's Zipkin would be flooded (its in-memory store
    # is the person's trace view), and one trace exporter is what the figures have measured.
    cfg["exporters"].pop("zipkin", None)
    sampled = cfg["service"]["pipelines"]["traces/sampled"]
    sampled["exporters"] = [e for e in sampled["exporters"] if e != "zipkin"]
    # No Kafka scraping from the bench instance: it would only add the shared broker's load.
    cfg["receivers"].pop("kafka_metrics", None)
    cfg["service"]["pipelines"].pop("metrics/kafka", None)
    if passthrough:
        pipelines = cfg["service"]["pipelines"]
        for name in [n for n in pipelines if n.startswith("traces/")]:
            del pipelines[name]
        del pipelines["metrics/red"]
        pipelines["traces/pass"] = {"receivers": ["otlp"],
                                    "processors": ["memory_limiter", "batch"],
                                    "exporters": ["otlp_grpc/jaeger"]}
        used = {c for pipeline in pipelines.values()
                for c in (*pipeline["receivers"], *pipeline["exporters"])}
        cfg["connectors"] = {k: v for k, v in cfg["connectors"].items() if k in used}
    if not redaction:
        for pipeline in cfg["service"]["pipelines"].values():
            pipeline["processors"] = [p for p in pipeline.get("processors", [])
                                      if not p.startswith("transform/redact_")]
    for dotted, value in (overrides or {}).items():
        set_path(cfg, dotted, value)
    return cfg


def sink_config() -> dict[str, Any]:
    """A collector that accepts OTLP traces and logs and drops them (debug exporter, basic)."""
    s = SINK_PORTS
    return {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{s['otlp_grpc']}", "max_recv_msg_size_mib": 64},
            "http": {"endpoint": f"127.0.0.1:{s['otlp_http']}"}}}},
        "exporters": {"debug": {"verbosity": "basic", "sampling_initial": 1,
                                "sampling_thereafter": 1000}},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{s['health']}"}},
        "service": {
            "extensions": ["health_check"],
            "telemetry": {"logs": {"level": "warn"}, "metrics": {"level": "none"}},
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]},
                          "logs": {"receivers": ["otlp"], "exporters": ["debug"]}}},
    }


class BenchCollector:
    """A second ``otelcol-soma`` on the bench ports (plus its sink); a context manager."""

    def __init__(self, workdir: Path, name: str, overrides: Mapping[str, Any] | None = None,
                 passthrough: bool = False, redaction: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
        self.config = bench_config(self.dir / "queues", overrides, passthrough, redaction)
        self.proc: subprocess.Popen[bytes] | None = None
        self.sink: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BenchCollector:
        binary = str(collector_binary())
        (self.dir / "sink.yaml").write_text(yaml.safe_dump(sink_config()))
        (self.dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = {"SOMA_STACK_DATA": str(self.dir), "GOMAXPROCS": str(os.cpu_count() or 2)}
        self.sink = spawn([binary, "--config", str(self.dir / "sink.yaml")],
                          self.dir / "sink.log", env)
        wait_http(f"http://127.0.0.1:{SINK_PORTS['health']}/", 30, self.sink,
                  self.dir / "sink.log")
        self.proc = spawn([binary, COLLECTOR_FEATURE_GATES, "--config",
                           str(self.dir / "config.yaml")],
                          self.dir / "collector.log", env)
        wait_http(f"http://127.0.0.1:{BENCH_PORTS['health']}/", 60, self.proc,
                  self.dir / "collector.log")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in (self.proc, self.sink):
            if proc is not None:
                stop(proc)

    @property
    def stat(self) -> ProcStat:
        """CPU and RSS of the bench collector (not the sink)."""
        assert self.proc is not None
        return ProcStat(self.proc.pid)

    def metric(self, name: str, match: Mapping[str, str] | None = None) -> float:
        """Sum of one of its own ``otelcol_*`` counters (with or without the ``_total`` suffix)."""
        url = f"http://127.0.0.1:{BENCH_PORTS['own_metrics']}/metrics"
        base = name.removesuffix("_total")
        return scrape_sum(url, base, match) + scrape_sum(url, base + "_total", match)


@contextlib.contextmanager
def timed(section: Section) -> Iterator[None]:
    """Record the wall time of a block into ``section.seconds``."""
    start = time.monotonic()
    try:
        yield
    finally:
        section.seconds = round(time.monotonic() - start, 1)


TRACE_EXPORT = "opentelemetry.proto.collector.trace.v1.TraceService"
"""The OTLP trace service's gRPC name (its method is ``Export``)."""


def otlp_trace_server(
    port: int, export: Callable[[ExportTraceServiceRequest], None]
) -> grpc.Server:
    """An OTLP/gRPC trace server on 127.0.0.1:``port`` that hands every export request to
    ``export`` and answers success; not started yet."""

    def handle(request: ExportTraceServiceRequest, _: object) -> ExportTraceServiceResponse:
        export(request)
        return ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(TRACE_EXPORT, {
        "Export": grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=ExportTraceServiceRequest.FromString,
            response_serializer=ExportTraceServiceResponse.SerializeToString)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    return server
