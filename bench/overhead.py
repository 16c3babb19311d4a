"""Gateway overhead (issue 7, item 1): wrk throughput and p50/p99 for each telemetry variant.

What runs
---------
:mod:`bench.app` (the gateway's shape: see its docstring for why not the real gateway) under
one uvicorn worker per variant, all running at once on 127.0.0.1:18080 and up, loaded one at a
time by ``wrk -t1 -c16 --latency`` in short alternating rounds (see the notes in
:func:`run`), on the trivial route (``GET /v1/ping``) and on the
message route (``POST /v1/sessions/s1/messages``: auth, validation, Redis INCR, Kafka send
awaited). Variants: ``none`` (the baseline), ``project`` (``opentelemetry-instrument`` with the
services' environment from ``stack/components.py`` + ``otel.configure()``; traces, metrics and
logs exported over OTLP gRPC to the shared collector), ``otel-defaults`` (plain
``opentelemetry-instrument``), ``prometheus`` (the seed's prometheus_client decorator), and
two diagnostic variants (full mode only), each the project setup minus one part:
``project-no-client-spans`` (no Redis and aiokafka instrumentation) and
``project-no-span-export`` (``OTEL_TRACES_EXPORTER=none``).

Figures: requests/s as a ratio to ``none`` on the same route in the same round, the median
over the rounds (targets: project >= 0.75x on the trivial route, >= 0.9x on the message
route), p50/p99 latency, the app's CPU per request and peak RSS. Every non-2xx answer or
socket error fails the benchmark.

Helpers :func:`serve` and :func:`wrk` are shared with :mod:`bench.memory`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    PY,
    VENV_BIN,
    Context,
    ProcStat,
    Row,
    RssPeak,
    Section,
    spawn,
    stop,
    timed,
    wait_http,
)

PORT = 18080
VARIANTS = ("none", "project", "otel-defaults", "prometheus", "project-no-client-spans",
            "project-no-span-export")
#: Diagnostic variants: the project's setup minus one part, to show where its time goes. They
#: do not carry the same telemetry and have no target.
PARTS = {  # variant -> environment added to the project variant's
    "project-no-client-spans": {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "redis,aiokafka"},
    "project-no-span-export": {"OTEL_TRACES_EXPORTER": "none"},
}
ROUTES = {"trivial": "/v1/ping", "message": "/v1/sessions/s1/messages"}
TARGETS = {"trivial": 0.75, "message": 0.9}
ROUNDS = 15
SERVICE_ENV = {  # stack/components.py _service_env, the services' documented usage
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
    "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
    "OTEL_METRIC_EXPORT_INTERVAL": "5000",
    "SOMA_AGENT_MODE": "LOCAL",
}
POST_LUA = """wrk.method = "POST"
wrk.body = '{"text": "hello from wrk, a message of ordinary length for the benchmark"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key"
"""


def command(variant: str, port: int = PORT) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment of one variant."""
    env = {"BENCH_VARIANT": variant, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    app = [PY, "-m", "bench.app", "--port", str(port)]
    instrument = [str(VENV_BIN / "opentelemetry-instrument")]
    run_id = uuid.uuid4().hex[:6]
    if variant == "project" or variant in PARTS:
        env |= SERVICE_ENV | PARTS.get(variant, {}) | {
            "OTEL_SERVICE_NAME": "bench-app-project",
            "OTEL_RESOURCE_ATTRIBUTES": f"service.version=bench,service.instance.id={run_id}"}
        return instrument + app, env
    if variant == "otel-defaults":
        # The contrib alone, as opentelemetry-distro sets it up: no distro of this package
        # (OTEL_PYTHON_DISTRO names none, so its post-instrument step does nothing) and the four
        # variables that opentelemetry-distro would default.
        env |= {"OTEL_SERVICE_NAME": "bench-app-defaults",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_PYTHON_DISTRO": "none", "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        return instrument + app, env
    return app, env


@contextlib.contextmanager
def serve(ctx: Context, variant: str, topic: str,
          port: int = PORT) -> Iterator[subprocess.Popen[bytes]]:
    """Run the bench app in ``variant`` on ``port`` until the block ends."""
    argv, env = command(variant, port)
    env["BENCH_TOPIC"] = topic
    log = ctx.workdir / f"app-{variant}.log"
    proc = spawn(argv, log, env)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/ping", 60, proc, log)
        yield proc
    finally:
        stop(proc)


@dataclass
class WrkResult:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_per_req_us: float = 0.0
    rss_mib: float = 0.0


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(route: str, seconds: float, workdir: Path, pid: int | None = None,
        connections: int = 16, port: int = PORT) -> WrkResult:
    """Run wrk against ``route``; CPU and peak RSS of ``pid`` during the run."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
            "--timeout", "5s"]
    if route == "message":
        script = workdir / "post.lua"
        script.write_text(POST_LUA)
        argv += ["-s", str(script)]
    argv.append(f"http://127.0.0.1:{port}{ROUTES[route]}")
    stat = ProcStat(pid) if pid else None
    c0 = stat.cpu_seconds() if stat else 0.0
    with RssPeak(stat) as rss:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                             check=True).stdout
    cpu = (stat.cpu_seconds() - c0) if stat else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      out):
        errors += sum(int(g) for g in m.groups())
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return WrkResult(rps, p50, p99, reqs, errors, cpu / reqs * 1e6 if reqs else 0.0,
                     rss.peak_mib)


def bench_topic() -> str:
    """Create the message route's topic (1 partition) and return its name."""
    import asyncio

    from bench.kafka import create_topics

    topic = f"bench.messages.{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topics({topic: 1}))
    return topic


def drop_topic(topic: str) -> None:
    """Delete the message route's topic."""
    import asyncio

    from bench.kafka import delete_topics

    asyncio.run(delete_topics([topic]))


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median: the order statistics (k, n+1-k) of the
    sorted values with the largest k whose binomial coverage is still >= ``confidence``
    (for 15 rounds: the 4th and 12th values, 96%); the whole range when n is too small."""
    ordered, n = sorted(values), len(values)
    best = 1
    for k in range(1, (n + 1) // 2 + 1):
        coverage = 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n
        if coverage >= confidence:
            best = k
    return ordered[best - 1], ordered[n - best]


def settle(pids: list[int], idle_cores: float = 0.02, window: float = 0.3,
           limit: float = 15.0) -> None:
    """Wait until the processes together use at most ``idle_cores`` over ``window`` seconds
    (at most ``limit`` seconds). A variant keeps exporting its backlog after its load stops,
    and that work must not land in the next variant's window."""
    stats = [ProcStat(pid) for pid in pids]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = sum(stat.cpu_seconds() for stat in stats)
        time.sleep(window)
        if sum(stat.cpu_seconds() for stat in stats) - before <= idle_cores * window:
            return


def _median(runs: list[WrkResult]) -> WrkResult:
    """Each figure's median over the rounds."""
    return WrkResult(*(statistics.median(getattr(r, f.name) for r in runs)
                       for f in dataclasses.fields(WrkResult)))


def run(ctx: Context) -> Section:
    """Every variant on both routes, in alternating rounds; median ratios to ``none``."""
    sec = Section("overhead", "Gateway overhead: instrumentation variants under wrk")
    seconds = 2.0
    rounds = 1 if ctx.smoke else ROUNDS
    variants = tuple(v for v in VARIANTS if not (ctx.smoke and v in PARTS))
    ports = {variant: PORT + i for i, variant in enumerate(variants)}
    runs: dict[tuple[str, str], list[WrkResult]] = {}
    with timed(sec):
        topic = bench_topic()
        try:
            with contextlib.ExitStack() as apps:
                procs = {v: apps.enter_context(serve(ctx, v, topic, ports[v])) for v in variants}
                for variant in variants:
                    for route in ROUTES:
                        wrk(route, 1.0 if ctx.smoke else 2.0, ctx.workdir,
                            port=ports[variant])  # warm-up
                for round_no in range(1, rounds + 1):
                    order = variants if round_no % 2 else variants[::-1]
                    for route in ROUTES:
                        for variant in order:
                            settle([proc.pid for proc in procs.values()])
                            res = wrk(route, seconds, ctx.workdir, procs[variant].pid,
                                      port=ports[variant])
                            if res.errors:
                                raise RuntimeError(f"{variant} {route}: {res.errors} errors "
                                                   f"of {res.requests} requests")
                            runs.setdefault((variant, route), []).append(res)
                            ctx.log(f"  round {round_no} {variant:23} {route:8} {res.rps:7.0f}"
                                    f" req/s p50 {res.p50_ms:.2f} ms p99 {res.p99_ms:.2f} ms "
                                    f"cpu/req {res.cpu_per_req_us:.0f} us rss "
                                    f"{res.rss_mib:.0f} MiB")
        finally:
            drop_topic(topic)
        results = {key: _median(value) for key, value in runs.items()}

        def round_ratios(variant: str, route: str) -> list[float]:
            return [r.rps / b.rps for r, b in zip(runs[(variant, route)], runs[("none", route)],
                                                   strict=True)]

        def median_round(variant: str, route: str) -> int:
            """The round whose ratio is the median one (the lower middle for even counts)."""
            ratios = round_ratios(variant, route)
            return sorted(range(len(ratios)), key=ratios.__getitem__)[(len(ratios) - 1) // 2]

        for route in ROUTES:
            for variant in variants[1:]:
                i = median_round(variant, route)
                r, base = runs[(variant, route)][i], runs[("none", route)][i]
                target = f">= {TARGETS[route]}x" if variant == "project" else ""
                met = r.rps / base.rps >= TARGETS[route] if variant == "project" else None
                ratios = round_ratios(variant, route)
                per_round = ", ".join(f"{x:.2f}" for x in ratios)
                low, high = median_interval(ratios)
                sec.rows.append(Row(f"{route} route, {variant}: throughput (median ratio of "
                                    f"{rounds} rounds)", r.rps, "req/s", base.rps,
                                    "uninstrumented, same route, same round", target, met,
                                    note=f"median's 95% interval {low:.2f}-{high:.2f}; "
                                    f"per-round ratios {per_round}"))
            sec.rows.append(Row(f"{route} route, project: p99 latency (median)",
                                results[("project", route)].p99_ms, "ms",
                                results[("none", route)].p99_ms, "uninstrumented"))
            sec.rows.append(Row(f"{route} route, project: app CPU per request (median)",
                                results[("project", route)].cpu_per_req_us, "us",
                                results[("none", route)].cpu_per_req_us, "uninstrumented"))
        lines = ["| route | variant | req/s (median) | ratio (median of rounds) | per-round "
                 "ratios | p50 ms | p99 ms | app CPU us/req | peak RSS MiB |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for route in ROUTES:
            for variant in variants:
                r = results[(variant, route)]
                ratios = round_ratios(variant, route)
                per_round = ", ".join(f"{x:.2f}" for x in ratios)
                lines.append(f"| {route} | {variant} | {r.rps:,.0f} | "
                             f"{statistics.median(ratios):.2f}x | {per_round} | "
                             f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_per_req_us:.0f} | "
                             f"{r.rss_mib:.0f} |")
        sec.tables.append("\n".join(lines))
        if all((v, "message") in results for v in PARTS):

            def extra(variant: str, than: str) -> float:
                """Median over the rounds of the CPU per request ``variant`` adds to ``than``
                in the same round (paired, so a slow stretch of the machine cancels out)."""
                return statistics.median(
                    a.cpu_per_req_us - b.cpu_per_req_us
                    for a, b in zip(runs[(variant, "message")], runs[(than, "message")],
                                    strict=True))

            none_cpu = results[("none", "message")].cpu_per_req_us
            sec.notes.append(
                "Message route, app CPU per request in this run: uninstrumented "
                f"{none_cpu:.0f} us (median); medians of the per-round differences: the SERVER "
                "span and the trace context in the body and headers add "
                f"{extra('project-no-client-spans', 'none'):.0f} us "
                "(project-no-client-spans - none); the Redis and Kafka client spans add "
                f"{extra('project', 'project-no-client-spans'):.0f} us "
                "(project - project-no-client-spans); encoding and sending the route's spans "
                f"is {extra('project', 'project-no-span-export'):.0f} us of the total "
                f"(project - project-no-span-export); all of it "
                f"{extra('project', 'none'):.0f} us (project - none). The 0.9x target leaves "
                f"{none_cpu / 0.9 - none_cpu:.0f} us for all of it.")
        sec.notes += [
            "Where the project variant's time goes: project-no-client-spans is the same setup "
            "with the Redis and aiokafka instrumentations disabled "
            "(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=redis,aiokafka: no Redis or Kafka client "
            "spans, only the SERVER span and the body's trace context remain), "
            "project-no-span-export the same "
            "setup with OTEL_TRACES_EXPORTER=none (spans made and scrubbed, never encoded or "
            "sent). Their CPU per request against none and project splits the overhead.",
            f"Rounds: {rounds}. Every variant runs at once, each in its own process on its "
            f"own port (18080 and up) and idle while the others are loaded; each round loads "
            f"them one after the other for {seconds:g} s per route (the order reversed every "
            "other round), so a variant and the baseline are measured seconds apart. Before "
            "each window the bench waits until every variant's process is idle (under 2% of "
            "a core for 0.3 s), so that no variant's leftover export work (otel-defaults "
            "drains its span queue for seconds) falls into the next one's window. The "
            "ratio is the median of the per-round ratios; the summary row shows the round "
            "that has it, and a distribution-free 95% interval for the median (order "
            "statistics of the rounds; binomial coverage). The per-round ratios show how much "
            "one measurement moves on this shared machine.",
            "App: bench/app.py (the gateway's shape), not services.gateway: the real gateway "
            "has no uninstrumented mode and its message route would drive the shared stack's "
            "worker and SLM. One uvicorn worker; wrk -t1 -c16 on the same 2 cores.",
            "The ratio that matters is the project variant's: every span is exported over OTLP "
            "to the shared collector (spanmetrics needs all of them), plus OTLP metrics and "
            "logs.",
        ]
        for variant in variants:
            argv, env = command(variant, ports[variant])
            shown = " ".join(f"{k}={v}" for k, v in env.items() if k != "PYTHONPATH")
            sec.commands.append(f"{shown} {' '.join(argv)}".replace(str(VENV_BIN) + "/",
                                                                   ".venv/bin/"))
        sec.commands.append(f"wrk -t1 -c16 -d{seconds:g}s --latency "
                            "http://127.0.0.1:$PORT/v1/ping   # $PORT: the variant's")
        sec.commands.append(f"wrk -t1 -c16 -d{seconds:g}s --latency -s post.lua "
                            "http://127.0.0.1:$PORT/v1/sessions/s1/messages")
    return sec
