"""SomaAgent benchmarks (issue 7): every figure a ratio to a baseline measured in the same run.

Run on the live stack (``stack/stack up``, or ``make bench`` which does both)::

    .venv/bin/python -m bench              # full run (<= 15 min), writes docs/benchmarks.md
    .venv/bin/python -m bench --smoke      # CI size (<= 2 min), writes .stack/bench/smoke.md
    .venv/bin/python -m bench --only kafka freshness

One module per benchmark, each with ``run(ctx) -> Section`` and a docstring saying what it
measures, against which baseline, and how:

* :mod:`bench.collector` - collector spans/s, CPU and RSS, the knee, spans/s per core.
* :mod:`bench.redaction` - collector CPU per span with its redaction processors on vs off.
* :mod:`bench.agent` - the agent tier's added latency per hop, against sending to the gateway
  tier directly.
* :mod:`bench.kafka` - per-message cost of trace-context propagation; DLQ throughput with
  poison messages and exact counts.
* :mod:`bench.freshness` - request to Prometheus counter, Jaeger trace and VictoriaLogs line.
* :mod:`bench.memory` - collector RSS against tail sampling's num_traces/decision_wait;
  service RSS with and without instrumentation under load.
* :mod:`bench.overhead` - HTTP throughput and latency under wrk for four instrumentation
  variants on a trivial and a message route, plus a profile.

Shared machinery is in :mod:`bench.common`, the page in :mod:`bench.report`, the small FastAPI
app the service benchmarks run in :mod:`bench.app`. Traffic goes to 127.0.0.1 only; every
load loop is bounded in count and time. Nothing here is a timed test: ``tests/bench`` runs the
smoke mode and checks only that it completes and writes well-formed results.
"""

BENCHMARKS: tuple[str, ...] = (
    "collector", "redaction", "agent", "kafka", "freshness", "memory", "overhead")
