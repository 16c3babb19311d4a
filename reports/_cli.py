"""``python -m reports.sla``: parse the period, build the report, write sla.html and sla.json.

Exit status: 0 written; 2 bad arguments (a time that is not one, a period that ends before it
starts, ends in the future or lasts under a minute); 1 a live API unreachable or failing (the
message names it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from reports._build import build_report
from reports._html import render
from reports._http import SourceError
from reports._jaeger import Jaeger
from reports._period import PeriodError, parse_period
from reports._prometheus import Prometheus

PROMETHEUS = "http://127.0.0.1:9090"
JAEGER = "http://127.0.0.1:16686"
TRACE_UI = "http://127.0.0.1:9411/zipkin"
_RELATIVE = re.compile(r"^-\d")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports.sla",
        description="Write an SLA report for a period: each SLO's attainment and error budget, "
        "the alerts that fired and the top error traces, as DIR/sla.html and DIR/sla.json, "
        "from Prometheus's and Jaeger's live APIs.",
    )
    parser.add_argument("--from", dest="start", default="-7d", metavar="TIME",
                        help="start: RFC 3339 (2026-11-26T10:00:00Z), now, or relative "
                        "-7d / -1h30m (units w d h m s); default -7d")
    parser.add_argument("--to", dest="end", default="now", metavar="TIME",
                        help="end, same forms; default now. Every figure is evaluated here")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder for sla.html and sla.json (created if missing)")
    parser.add_argument("--prometheus", default=PROMETHEUS, metavar="URL",
                        help=f"Prometheus base URL (default {PROMETHEUS})")
    parser.add_argument("--jaeger", default=JAEGER, metavar="URL",
                        help=f"Jaeger query base URL (default {JAEGER})")
    parser.add_argument("--trace-ui", default=TRACE_UI, metavar="URL",
                        help=f"trace UI the links open (Zipkin Lens; default {TRACE_UI})")
    parser.add_argument("--traces", type=int, default=5, metavar="N",
                        help="error traces listed per service (default 5)")
    parser.add_argument("--trace-search-limit", type=int, default=500, metavar="N",
                        help="traces fetched per service and search, newest first, before "
                        "keeping the failed ones and ranking them (default 500)")
    parser.add_argument("--alert-resolution", type=int, default=None, metavar="SECONDS",
                        help="step of the alert range query (default: 15 s, coarser for "
                        "periods over ~45 h so that it stays under 11,000 points)")
    parser.add_argument("--settle-timeout", type=float, default=150.0, metavar="SECONDS",
                        help="how long to wait for Prometheus to evaluate every rule group and "
                        "scrape every target past the period's end (default 150)")
    return parser


def _relative_times_joined(argv: Sequence[str]) -> list[str]:
    """``--from -7d`` as ``--from=-7d``: argparse takes a value starting with ``-`` for an
    option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--from", "--to") and _RELATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: the process's); return its exit status."""
    parser = _parser()
    args = parser.parse_args(_relative_times_joined(sys.argv[1:] if argv is None else argv))
    now_ms = int(time.time()) * 1000
    try:
        period = parse_period(args.start, args.end, now_ms=now_ms)
    except PeriodError as exc:
        parser.error(f"bad period: {exc}")
    for name in ("traces", "trace_search_limit", "alert_resolution"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    if args.alert_resolution and period.length_ms // (args.alert_resolution * 1000) >= 11_000:
        parser.error("--alert-resolution gives over 11,000 points over the period; raise it")
    try:
        report = build_report(
            prometheus=Prometheus(args.prometheus),
            jaeger=Jaeger(args.jaeger, ui=args.trace_ui),
            period=period,
            now_ms=now_ms,
            traces_per_service=args.traces,
            trace_search_limit=args.trace_search_limit,
            alert_step_ms=args.alert_resolution * 1000 if args.alert_resolution else None,
            settle_timeout_s=args.settle_timeout,
        )
    except SourceError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sla.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    (args.out / "sla.html").write_text(render(report))
    if not report.settled:
        print(f"{parser.prog}: warning: Prometheus had not run past the period's end: "
              + ", ".join(report.behind[:5]), file=sys.stderr)
    print(f"wrote {args.out / 'sla.html'} and {args.out / 'sla.json'}")
    return 0
