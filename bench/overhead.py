"""Gateway overhead (issue 7, item 1): wrk throughput and p50/p99 for four telemetry variants.

What runs
---------
:mod:`bench.app` (the gateway's shape: see its docstring for why not the real gateway) under
one uvicorn worker on 127.0.0.1:18080, once per variant, loaded by ``wrk -t1 -c16 --latency``
for a fixed time after a short warm-up, on the trivial route (``GET /v1/ping``) and on the
message route (``POST /v1/sessions/s1/messages``: auth, validation, Redis INCR, Kafka send
awaited). Variants: ``none`` (the baseline), ``project`` (``opentelemetry-instrument`` with the
services' environment from ``stack/components.py`` + ``otel.configure()``; traces, metrics and
logs exported over OTLP gRPC to the shared collector), ``otel-defaults`` (plain
``opentelemetry-instrument``), ``prometheus`` (the seed's prometheus_client decorator).

Figures: requests/s as a ratio to ``none`` on the same route in the same run (targets: project
>= 0.75x on the trivial route, >= 0.9x on the message route), p50/p99 latency, the app's CPU
per request and peak RSS. Every non-2xx answer or socket error fails the benchmark.

Helpers :func:`serve` and :func:`wrk` are shared with :mod:`bench.memory`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import statistics
import subprocess
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
VARIANTS = ("none", "project", "otel-defaults", "prometheus")
ROUTES = {"trivial": "/v1/ping", "message": "/v1/sessions/s1/messages"}
TARGETS = {"trivial": 0.75, "message": 0.9}
ROUNDS = 3
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


def command(variant: str) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment of one variant."""
    env = {"BENCH_VARIANT": variant, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    app = [PY, "-m", "bench.app", "--port", str(PORT)]
    instrument = [str(VENV_BIN / "opentelemetry-instrument")]
    run_id = uuid.uuid4().hex[:6]
    if variant == "project":
        env |= SERVICE_ENV | {
            "OTEL_SERVICE_NAME": "bench-app-project",
            "OTEL_RESOURCE_ATTRIBUTES": f"service.version=bench,service.instance.id={run_id}"}
        return instrument + app, env
    if variant == "otel-defaults":
        env |= {"OTEL_SERVICE_NAME": "bench-app-defaults",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
        return instrument + app, env
    return app, env


@contextlib.contextmanager
def serve(ctx: Context, variant: str, topic: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run the bench app in ``variant`` until the block ends."""
    argv, env = command(variant)
    env["BENCH_TOPIC"] = topic
    log = ctx.workdir / f"app-{variant}.log"
    proc = spawn(argv, log, env)
    try:
        wait_http(f"http://127.0.0.1:{PORT}/v1/ping", 60, proc, log)
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
        connections: int = 16) -> WrkResult:
    """Run wrk against ``route``; CPU and peak RSS of ``pid`` during the run."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
            "--timeout", "5s"]
    if route == "message":
        script = workdir / "post.lua"
        script.write_text(POST_LUA)
        argv += ["-s", str(script)]
    argv.append(f"http://127.0.0.1:{PORT}{ROUTES[route]}")
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
    p50 = _ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
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


def _median(runs: list[WrkResult]) -> WrkResult:
    """Each figure's median over the rounds."""
    return WrkResult(*(statistics.median(getattr(r, f.name) for r in runs)
                       for f in dataclasses.fields(WrkResult)))


def run(ctx: Context) -> Section:
    """Every variant on both routes, in alternating rounds; median ratios to ``none``."""
    sec = Section("overhead", "Gateway overhead: instrumentation variants under wrk")
    seconds = 3.0 if ctx.smoke else 8.0
    rounds = 1 if ctx.smoke else ROUNDS
    runs: dict[tuple[str, str], list[WrkResult]] = {}
    with timed(sec):
        topic = bench_topic()
        try:
            for round_no in range(1, rounds + 1):
                for variant in VARIANTS:
                    with serve(ctx, variant, topic) as proc:
                        for route in ROUTES:
                            wrk(route, 1.0 if ctx.smoke else 2.0, ctx.workdir)   # warm-up
                            res = wrk(route, seconds, ctx.workdir, proc.pid)
                            if res.errors:
                                raise RuntimeError(f"{variant} {route}: {res.errors} errors "
                                                   f"of {res.requests} requests")
                            runs.setdefault((variant, route), []).append(res)
                            ctx.log(f"  round {round_no} {variant:13} {route:8} {res.rps:7.0f}"
                                    f" req/s p50 {res.p50_ms:.2f} ms p99 {res.p99_ms:.2f} ms "
                                    f"cpu/req {res.cpu_per_req_us:.0f} us rss "
                                    f"{res.rss_mib:.0f} MiB")
        finally:
            drop_topic(topic)
        results = {key: _median(value) for key, value in runs.items()}

        def round_ratios(variant: str, route: str) -> list[float]:
            return [r.rps / b.rps for r, b in zip(runs[(variant, route)], runs[("none", route)],
                                                   strict=True)]

        for route in ROUTES:
            base = results[("none", route)]
            for variant in VARIANTS[1:]:
                r = results[(variant, route)]
                target = f">= {TARGETS[route]}x" if variant == "project" else ""
                met = r.rps / base.rps >= TARGETS[route] if variant == "project" else None
                per_round = ", ".join(f"{x:.2f}" for x in round_ratios(variant, route))
                sec.rows.append(Row(f"{route} route, {variant}: throughput (median of "
                                    f"{rounds})", r.rps, "req/s", base.rps,
                                    "uninstrumented, same route, median", target, met,
                                    note=f"per-round ratios {per_round}"))
            sec.rows.append(Row(f"{route} route, project: p99 latency",
                                results[("project", route)].p99_ms, "ms", base.p99_ms,
                                "uninstrumented"))
        lines = ["| route | variant | req/s | ratio | per-round ratios | p50 ms | p99 ms "
                 "| app CPU us/req | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|"]
        for route in ROUTES:
            base = results[("none", route)]
            for variant in VARIANTS:
                r = results[(variant, route)]
                per_round = ", ".join(f"{x:.2f}" for x in round_ratios(variant, route))
                lines.append(f"| {route} | {variant} | {r.rps:,.0f} | {r.rps / base.rps:.2f}x "
                             f"| {per_round} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                             f"{r.cpu_per_req_us:.0f} | {r.rss_mib:.0f} |")
        sec.tables.append("\n".join(lines))
        sec.notes += [
            f"Rounds: {rounds}. Each round starts every variant afresh and runs it on both "
            f"routes ({seconds:g} s after a warm-up), so slow phases of the shared machine hit "
            "all variants; the figures are medians over the rounds, and the per-round ratios "
            "show how much one measurement moves.",
            "App: bench/app.py (the gateway's shape), not services.gateway: the real gateway "
            "has no uninstrumented mode and its message route would drive the shared stack's "
            "worker and SLM. One uvicorn worker; wrk -t1 -c16 on the same 2 cores.",
            "The ratio that matters is the project variant's: every span is exported over OTLP "
            "to the shared collector (spanmetrics needs all of them), plus OTLP metrics and "
            "logs.",
        ]
        for variant in VARIANTS:
            argv, env = command(variant)
            shown = " ".join(f"{k}={v}" for k, v in env.items() if k != "PYTHONPATH")
            sec.commands.append(f"{shown} {' '.join(argv)}".replace(str(VENV_BIN) + "/",
                                                                   ".venv/bin/"))
        sec.commands.append(f"wrk -t1 -c16 -d{seconds:g}s --latency "
                            f"http://127.0.0.1:{PORT}/v1/ping")
        sec.commands.append(f"wrk -t1 -c16 -d{seconds:g}s --latency -s post.lua "
                            f"http://127.0.0.1:{PORT}/v1/sessions/s1/messages")
    return sec
