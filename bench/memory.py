"""Memory (issue 7, item 5): collector RSS against tail sampling; service RSS under load.

Collector
---------
A second collector (:class:`bench.common.BenchCollector`, the shared pipelines) per setting of
``tail_sampling`` ``num_traces`` / ``decision_wait``, each under the same steady load from
telemetrygen (full: 10,000 spans/s = 1,000 traces/s of 10 spans; smoke: 2,000 spans/s) until
the sampler's buffer reaches its steady size (about traces/s x decision_wait traces, capped by
``num_traces``), plus 6 s. telemetrygen's spans match no keep policy, so the 90% outside the
baseline are held for the whole ``decision_wait`` (``sampling_strategy: span-ingest``).
Figure: peak RSS (``VmRSS`` every 0.5 s), as a ratio to the shipped setting (30,000 / 180 s)
measured in the same run.

Service
-------
:mod:`bench.app` uninstrumented (``none``) and with the project's instrumentation
(``project``), each under wrk on the message route (full 10 s, smoke 3 s, after a warm-up):
peak RSS, ratio project / none.
"""

from __future__ import annotations

import time

from bench.collector import telemetrygen, tg_command
from bench.common import BenchCollector, Context, Row, RssPeak, Section, timed
from bench.overhead import bench_topic, drop_topic, serve, wrk

FULL_SETTINGS = ((30_000, 180), (50_000, 10), (10_000, 180), (50_000, 180))
SMOKE_SETTINGS = ((1_000, 180), (1_000, 2))


def collector_rss(ctx: Context, num_traces: int, wait_s: int, rate: float) -> float:
    """Peak RSS in MiB of a bench collector with these tail-sampling settings under load."""
    import subprocess

    overrides = {"processors/tail_sampling/num_traces": num_traces,
                 "processors/tail_sampling/decision_wait": f"{wait_s}s"}
    fill_s = int(min(wait_s, num_traces / (rate / 10))) + 6
    with BenchCollector(ctx.workdir, f"mem-{num_traces}-{wait_s}", overrides) as col:
        with RssPeak(col.stat) as rss, (col.dir / "telemetrygen.log").open("ab") as out:
            subprocess.run(tg_command(telemetrygen(), rate, fill_s), stdout=out,
                           stderr=out, timeout=fill_s + 60, check=False)
            time.sleep(0.5)
        return rss.peak_mib


def run(ctx: Context) -> Section:
    """Collector RSS per tail-sampling setting; service RSS with and without telemetry."""
    sec = Section("memory", "Memory: collector RSS vs tail sampling; service RSS under load")
    with timed(sec):
        rate = 2_000.0 if ctx.smoke else 10_000.0
        settings = SMOKE_SETTINGS if ctx.smoke else FULL_SETTINGS
        rss: dict[tuple[int, int], float] = {}
        for num_traces, wait_s in settings:
            rss[(num_traces, wait_s)] = collector_rss(ctx, num_traces, wait_s, rate)
            ctx.log(f"  collector num_traces={num_traces} decision_wait={wait_s}s: "
                    f"peak RSS {rss[(num_traces, wait_s)]:.0f} MiB")
        base_key = settings[0]
        for key, value in rss.items():
            if key == base_key:
                continue
            sec.rows.append(Row(f"collector peak RSS, num_traces={key[0]:,}, "
                                f"decision_wait={key[1]}s, {rate:,.0f} spans/s", value, "MiB",
                                rss[base_key], f"num_traces={base_key[0]:,}, "
                                f"decision_wait={base_key[1]}s"))
        lines = ["| num_traces | decision_wait | traces held (expected) | peak RSS MiB |",
                 "|---|---|---|---|"]
        for (num_traces, wait_s), value in rss.items():
            held = min(num_traces, int(rate / 10 * wait_s))
            lines.append(f"| {num_traces:,} | {wait_s} s | {held:,} | {value:.0f} |")
        sec.tables.append("\n".join(lines))

        seconds = 3.0 if ctx.smoke else 10.0
        svc: dict[str, float] = {}
        topic = bench_topic()
        try:
            for variant in ("none", "project"):
                with serve(ctx, variant, topic) as proc:
                    wrk("message", 1.0, ctx.workdir)
                    res = wrk("message", seconds, ctx.workdir, proc.pid)
                    svc[variant] = res.rss_mib
                    ctx.log(f"  service {variant}: peak RSS {res.rss_mib:.0f} MiB at "
                            f"{res.rps:.0f} req/s")
        finally:
            drop_topic(topic)
        sec.rows.append(Row("service peak RSS under wrk (message route), project "
                            "instrumentation", svc["project"], "MiB", svc["none"],
                            "uninstrumented, same load"))
        sec.notes += [
            f"Collector load: {rate:,.0f} spans/s in traces of 10 spans, until the buffer is "
            "full plus 6 s per setting. Tail sampling holds each unmatched trace for "
            "decision_wait, so the buffer grows with traces/s x decision_wait until num_traces "
            "caps it (the oldest are then evicted early; OtelCollectorSamplerAtCapacity warns "
            "at 95% of the cap). The shipped 30,000 / 180 s holds "
            "every trace whole up to 166 new traces/s per collector and bounds RSS at any "
            "rate below the memory_limiter's 768 MiB soft limit.",
            "Service: one uvicorn worker of bench/app.py; the instrumented process also holds "
            "the SDK, the instrumentations and the exporters' queues.",
        ]
        sec.commands.append(".venv/bin/python -m bench --only memory")
    return sec
