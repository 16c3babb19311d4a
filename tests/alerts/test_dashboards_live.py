"""Every Grafana panel of docs/dashboards shows data on the live stack after the demo workload.

The demo (``python -m services.demo``) sends ok, tool, tool-failure, policy-blocked,
over-budget, poison and bad-input traffic through the real services; then every panel query
(tests/rules/dashboard_queries.panel_queries) runs against the live Prometheus. A parse error
or an empty result fails the test, which lists every failing panel. Telemetry needs a few
export, scrape and evaluation intervals to arrive (and two samples of a new counter before
``rate`` sees it), so the queries are polled until they all answer or a deadline passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from tests import live
from tests.rules.dashboard_queries import PanelQuery, panel_queries

pytestmark = pytest.mark.usefixtures("stack")
ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_SECONDS = 180
# Metric export (5s) + scrape (15s) + rule evaluation (15s), twice for a new counter, + slack.
DATA_DEADLINE_SECONDS = 120


def _problem(query: PanelQuery) -> tuple[str, str] | None:
    """(kind, detail) when ``query`` fails to parse or returns nothing; None when it has data."""
    try:
        answer = live.get_json(f"{live.PROMETHEUS}/api/v1/query", {"query": query.expr})
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        return "error", f"{body.get('errorType')}: {body.get('error')}"
    if answer["status"] != "success":
        return "error", str(answer)
    if not answer["data"]["result"]:
        return "empty", "no series"
    return None


def _failing(queries: list[PanelQuery]) -> dict[PanelQuery, tuple[str, str]]:
    return {q: p for q in queries if (p := _problem(q)) is not None}


@pytest.mark.timeout(DEMO_TIMEOUT_SECONDS + DATA_DEADLINE_SECONDS + 60)
def test_every_dashboard_panel_query_returns_data_after_the_demo_workload() -> None:
    """After the demo workload, every panel query parses and returns at least one series."""
    demo = subprocess.run(
        [sys.executable, "-m", "services.demo"], cwd=ROOT, capture_output=True, text=True,
        timeout=DEMO_TIMEOUT_SECONDS, check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    queries = panel_queries()
    assert len(queries) >= 30
    # A query that does not parse never will; only empty results are worth waiting for.
    try:
        failing = live.wait_until(
            lambda: _failing(queries),
            lambda f: not f or any(kind != "empty" for kind, _ in f.values()),
            timeout=DATA_DEADLINE_SECONDS,
            what="every panel to return data",
            interval=5,
        )
    except AssertionError:
        failing = _failing(queries)
    assert not failing, "panels without data or with a query error:\n" + "\n".join(
        f"  {q.dashboard} / {q.panel} [{q.ref_id}] {kind}: {detail}\n    {q.expr}"
        for q, (kind, detail) in failing.items()
    )
