"""``python -m bench [--smoke] [--only NAME ... [--update]] [--md PATH] [--json PATH]``.

Runs the benchmarks in :data:`bench.BENCHMARKS` order on the live stack (``stack/stack up``
first) and writes the markdown page and JSON results. Defaults: full mode writes
``docs/benchmarks.md`` and ``.stack/bench/results.json``; ``--smoke`` (the CI size, about two
minutes) writes ``.stack/bench/smoke.md`` and ``.stack/bench/smoke.json`` so that a smoke run
never replaces the published page. A benchmark that raises is recorded as failed (its error in
the page and the JSON) and the others still run; the exit code is then 1. ``--only overhead
--update`` re-runs one benchmark and replaces its section in the existing JSON and page,
keeping the other sections and saying on the page which sections were re-run when.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import BENCHMARKS
from bench.common import REPO, Context, Section, machine
from bench.report import write


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmarks, write the results; 0 when every one completed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="short CI run of every benchmark")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--md", type=Path, help="markdown output")
    parser.add_argument("--json", type=Path, help="JSON output")
    parser.add_argument("--update", action="store_true",
                        help="with --only: replace those sections in the existing results and "
                             "page, keep the others (and their run's machine line)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    out_dir = REPO / ".stack" / "bench"
    md = args.md or (out_dir / "smoke.md" if args.smoke else REPO / "docs" / "benchmarks.md")
    js = args.json or (out_dir / ("smoke.json" if args.smoke else "results.json"))
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=out_dir))
    names = args.only or list(BENCHMARKS)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    command = ".venv/bin/python -m bench" + (" --smoke" if args.smoke else "")
    meta = {"machine": machine(), "smoke": args.smoke, "started": started,
            "command": command, "total_seconds": 0.0}
    ctx = Context(smoke=args.smoke, workdir=workdir,
                  log=lambda msg: print(msg, file=sys.stderr, flush=True))
    sections: list[Section] = []
    kept: list[Section] = []
    if args.update:
        if not args.only or not js.exists():
            parser.error(f"--update needs --only and an earlier run's {js}")
        earlier = json.loads(js.read_text())
        if earlier["smoke"] != args.smoke:
            parser.error(f"{js} is from a {'smoke' if earlier['smoke'] else 'full'} run")
        rerun = f"{', '.join(names)} re-run {started} UTC"
        meta = {**earlier, "updated": "; ".join(filter(None, [earlier.get("updated"), rerun]))}
        kept = [Section.from_json(s) for s in earlier["sections"]]
    t0 = time.monotonic()
    failed = False
    for name in names:
        ctx.log(f"[bench] {name} ({'smoke' if args.smoke else 'full'})")
        start = time.monotonic()
        try:
            module = importlib.import_module(f"bench.{name}")
            sections.append(module.run(ctx))
        except Exception:
            failed = True
            sec = Section(name, name, error=traceback.format_exc(limit=8))
            sec.seconds = round(time.monotonic() - start, 1)
            sections.append(sec)
            ctx.log(sec.error)
        ctx.log(f"[bench] {name} done in {time.monotonic() - start:.0f} s")
        if not args.update:
            meta["total_seconds"] = round(time.monotonic() - t0, 1)
        write(meta, _merged(kept, sections), md, js)  # after each: a partial page beats none
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    ctx.log(f"[bench] wrote {md} and {js}")
    return 1 if failed else 0


def _merged(kept: list[Section], fresh: list[Section]) -> list[Section]:
    """``kept`` with each section of ``fresh`` in place of the one with its key, in
    :data:`BENCHMARKS` order."""
    by_key = {s.key: s for s in kept} | {s.key: s for s in fresh}
    return [by_key[k] for k in BENCHMARKS if k in by_key]


if __name__ == "__main__":
    sys.exit(main())
