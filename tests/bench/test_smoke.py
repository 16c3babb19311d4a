"""``python -m bench --smoke`` completes and writes well-formed results (no timed assertion).

The smoke run drives every benchmark at its CI size on the live stack, so that none rots. The
test checks only structure: every benchmark present without error, every row a finite number
with a unit, ratios consistent with their baselines, and the markdown page carrying the
machine, the commands and the summary table. The figures themselves are never asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_smoke_run_writes_well_formed_results(stack: None, tmp_path: Path) -> None:
    md, js = tmp_path / "bench.md", tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--md", str(md), "--json", str(js)],
        cwd=REPO, capture_output=True, text=True, timeout=540, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(js.read_text())
    assert data["smoke"] is True
    assert data["machine"]["nproc"] >= 1 and data["machine"]["cpu_model"]
    sections = {s["key"]: s for s in data["sections"]}
    assert list(sections) == list(BENCHMARKS)
    for key, sec in sections.items():
        assert sec["error"] == "", f"{key}: {sec['error']}"
        assert sec["rows"], f"{key} has no figures"
        assert sec["commands"], f"{key} names no command"
        for row in sec["rows"]:
            assert row["name"] and row["unit"], row
            assert isinstance(row["value"], float | int) and math.isfinite(row["value"]), row
            if row["baseline"]:
                assert row["ratio"] == pytest.approx(row["value"] / row["baseline"]), row
            if row["target"]:
                assert isinstance(row["met"], bool), row
    page = md.read_text()
    noted = [row for sec in sections.values() for row in sec["rows"] if row["note"]]
    assert noted, "the overhead rows carry their interval notes"
    for row in noted:
        assert f"| {row['name']} ({row['note']}) |" in page, row
    for heading in ("## Machine", "## How to reproduce", "## Summary"):
        assert heading in page
    assert "python -m bench --smoke" in page


@pytest.mark.parametrize("n,expected", [(9, (2, 8)), (5, (1, 5)), (20, (6, 15)), (1, (1, 1))])
def test_median_interval_is_the_narrowest_order_statistic_pair_with_95_percent_coverage(
    n: int, expected: tuple[int, int],
) -> None:
    """The interval is the binomial order-statistic pair, e.g. the 2nd and 8th of 9 rounds."""
    from bench.overhead import median_interval

    low, high = median_interval([float(i) for i in range(n, 0, -1)])
    assert (low, high) == tuple(float(k) for k in expected)
    coverage = 1 - 2 * sum(math.comb(n, i) for i in range(expected[0])) / 2**n
    assert coverage >= 0.95 or expected == (1, n)
