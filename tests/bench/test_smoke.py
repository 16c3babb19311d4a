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
    for heading in ("## Machine", "## How to reproduce", "## Summary"):
        assert heading in page
    assert "python -m bench --smoke" in page
