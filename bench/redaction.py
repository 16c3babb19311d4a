"""Cost of the collector's redaction (issue 18, item 5): collector CPU per span, on vs off.

What runs
---------
The collector benchmark's setup (:class:`bench.common.BenchCollector`, the shared config on
the bench ports, telemetrygen traces of 10 spans) at one offered rate below the knee, four
times: redaction off (``transform/redact_*`` taken out of every pipeline) and on, each with
clean spans (the collector bench's HTTP attributes: the guard finds nothing, the usual case
for a service with the library) and with spans that each carry two secrets (``api_key`` and
Bearer text: every span runs the whole counted redaction). Per run: accepted spans/s and the
collector's CPU-seconds per second, hence CPU microseconds per accepted span.

Baseline
--------
The same spans with redaction off: the ratio is the CPU per span redaction adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.collector import run_step, telemetrygen, tg_command
from bench.common import BenchCollector, Context, Row, Section, timed

FULL_RATE, SMOKE_RATE = 8_000.0, 2_000.0
SECRETS = ("--telemetry-attributes", 'api_key="c4n4ry-bench"',
           "--telemetry-attributes", 'note="sent with Bearer c4n4ry-bench"')


@dataclass(frozen=True)
class Run:
    """One variant's measurement."""

    accepted: float     # spans/s
    cores: float        # collector CPU-seconds per second

    @property
    def us_per_span(self) -> float:
        """Collector CPU microseconds per accepted span."""
        return self.cores * 1e6 / self.accepted if self.accepted else 0.0


def _measure(ctx: Context, binary: Path, *, redaction: bool, secrets: bool) -> Run:
    name = f"redaction-{'on' if redaction else 'off'}-{'secrets' if secrets else 'clean'}"
    rate = SMOKE_RATE if ctx.smoke else FULL_RATE
    seconds = 3.0 if ctx.smoke else 20.0
    extra = SECRETS if secrets else ()
    with BenchCollector(ctx.workdir, name, redaction=redaction) as col:
        log = col.dir / "telemetrygen.log"
        run_step(col, binary, rate / 4, 2.0, log, extra)  # warm-up, not reported
        step = run_step(col, binary, rate, seconds, log, extra)
    ctx.log(f"  {name}: accepted {step.accepted:,.0f}/s, cores {step.cores:.2f}")
    return Run(step.accepted, step.cores)


def run(ctx: Context) -> Section:
    """Measure the four variants; figures as ratios of redaction on to off."""
    sec = Section("redaction", "Collector redaction cost (CPU per span, on vs off)")
    with timed(sec):
        binary = telemetrygen()
        runs = {(on, secrets): _measure(ctx, binary, redaction=on, secrets=secrets)
                for secrets in (False, True) for on in (False, True)}
        for secrets, label in ((False, "clean spans"), (True, "spans with 2 secrets each")):
            on, off = runs[(True, secrets)], runs[(False, secrets)]
            sec.rows.append(Row(f"collector CPU per span, redaction on ({label})",
                                on.us_per_span, "us", off.us_per_span,
                                f"redaction off, same spans ({off.accepted:,.0f} spans/s)"))
        rate = SMOKE_RATE if ctx.smoke else FULL_RATE
        sec.notes += [
            f"Offered {rate:,.0f} spans/s (10-span traces) for each variant, below the full "
            "pipeline's knee; CPU is the collector process's own (/proc), per accepted span.",
            "Clean spans: the guard (one key pattern over the keys, one text pattern over the "
            "string values) finds nothing and the counted statements are skipped. Spans with "
            "secrets: every span runs the key, scheme and pair steps with their counts, and "
            "every span's counts go through signal_to_metrics and deltatocumulative.",
        ]
        sec.commands.append(" ".join(tg_command(binary, rate, 20) + list(SECRETS)))
    return sec
