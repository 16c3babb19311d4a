"""Every PromQL query of docs/runbook.md and of docs/dashboards/ runs on the live Prometheus.

One run of the demo workload (``python -m services.demo``) sends its known mix through the real
services; then every query is run as an instant query: each line of each ```promql block of
the runbook, and the ``expr`` of every target of every dashboard, with Grafana's template
variables replaced by the values Grafana gives them. Each must answer ``success`` without
warnings (an error such as "vector cannot contain metrics with the same labelset" only shows
once the series exist, hence the demo first). The runbook's queries in the sections of the
collector alerts (alerts whose expression reads ``otelcol_*`` series) must also return data:
a running collector always has its receiver, exporter and queue series. The terminal summary
says how many queries ran.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import live
from tests.rules.conftest import RUNBOOK, load_rules
from tests.rules.dashboard_queries import DASHBOARDS_DIR, panel_queries

ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_SECONDS = 180
# Metric export (5s) + scrape (15s) + rule evaluation (15s), twice for a new counter, + slack.
DATA_DEADLINE_SECONDS = 120

#: Grafana's built-in variables for the dashboards' range (DASHBOARD_RANGE), a panel of 1,000
#: data points and the data source's default scrape interval, 15 s: $__interval is 21,600 s /
#: 1,000 rounded to Grafana's 20s step, $__rate_interval max($__interval + 15 s, 4 x 15 s).
DASHBOARD_RANGE = {"from": "now-6h", "to": "now"}
GRAFANA_VARIABLES = {
    "__interval": "20s",
    "__interval_ms": "20000",
    "__rate_interval": "1m",
    "__range": "21600s",
    "__range_s": "21600",
    "__range_ms": "21600000",
}
#: ${name}, ${name:format}, [[name]] and $name, as Grafana finds variables in a query.
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_PROMQL_BLOCK = re.compile(r"```promql\n(.*?)```", flags=re.S)
_HEADING = re.compile(r"^## (.+)$", flags=re.M)


@dataclass(frozen=True)
class DocQuery:
    """One query of the docs: where it is written, as Prometheus gets it, whether it needs data."""

    where: str
    expr: str
    needs_data: bool


def grafana_interpolated(expr: str) -> str:
    """``expr`` as Grafana sends it to Prometheus: its variables replaced by their values.

    ``$1`` and the like are label_replace's regex references, no variables; any other name
    not in GRAFANA_VARIABLES fails, naming it (the dashboards define only ``datasource``).
    """

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name.isdigit():
            return match[0]
        assert name in GRAFANA_VARIABLES, f"no value for Grafana variable ${name} in {expr}"
        return GRAFANA_VARIABLES[name]

    return _VARIABLE.sub(value, expr)


def _collector_alerts() -> set[str]:
    """The alerts whose expression reads the collector's own otelcol_* series."""
    return {rule.name for rule in load_rules("alert") if "otelcol_" in str(rule.body["expr"])}


def runbook_queries() -> list[DocQuery]:
    """Each line of each promql block of the runbook, named by its section and place in it."""
    text = RUNBOOK.read_text()
    needing_data = _collector_alerts()
    by_section: dict[str, list[str]] = {}
    for block in _PROMQL_BLOCK.finditer(text):
        headings = _HEADING.findall(text, 0, block.start())
        section = headings[-1].strip() if headings else "introduction"
        by_section.setdefault(section, []).extend(
            line for line in block[1].splitlines() if line.strip())
    return [
        DocQuery(f"runbook:{section}:{i}", line, section in needing_data)
        for section, lines in by_section.items()
        for i, line in enumerate(lines, start=1)
    ]


def dashboard_queries() -> list[DocQuery]:
    """The expr of every target of every dashboard, named by dashboard, panel and refId."""
    return [
        DocQuery(f"{Path(q.dashboard).stem}:{q.panel}:{q.ref_id}", grafana_interpolated(q.expr),
                 needs_data=False)
        for q in panel_queries()
    ]


QUERIES = runbook_queries() + dashboard_queries()


def _answer(expr: str) -> dict[str, Any]:
    """Prometheus's answer to the instant query ``expr``, its error answers (4xx/5xx) included."""
    try:
        answer: dict[str, Any] = live.get_json(f"{live.PROMETHEUS}/api/v1/query", {"query": expr})
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read() or b"{}")
    return answer


def _awaited(queries: list[DocQuery]) -> list[DocQuery]:
    """The queries of ``queries`` that answer success with no data yet."""
    return [
        q for q in queries
        if (answer := _answer(q.expr)).get("status") == "success" and not answer["data"]["result"]
    ]


@pytest.fixture(scope="module")
def after_demo(services: None) -> None:
    """One run of the demo workload, then its data in Prometheus: every dashboard query (each
    shows data after the demo, tests/alerts/test_dashboards_live.py) and every query that needs
    data answers one, or the deadline passed (the tests then say which did not)."""
    demo = subprocess.run(
        [sys.executable, "-m", "services.demo"], cwd=ROOT, capture_output=True, text=True,
        timeout=DEMO_TIMEOUT_SECONDS, check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    awaited = [q for q in QUERIES if q.needs_data or not q.where.startswith("runbook:")]
    with contextlib.suppress(AssertionError):  # past the deadline each test shows its answer
        live.wait_until(lambda: _awaited(awaited), lambda pending: not pending,
                        timeout=DATA_DEADLINE_SECONDS, what="the demo's data in Prometheus",
                        interval=5)


def test_the_queries_are_every_promql_block_line_and_every_dashboard_target() -> None:
    """The runbook gives at least one query per alert section and the dashboards at least 30."""
    runbook = [q for q in QUERIES if q.where.startswith("runbook:")]
    sections = {q.where.split(":")[1] for q in runbook}
    assert sections == {rule.name for rule in load_rules("alert")}
    assert {q.where.split(":")[1] for q in runbook if q.needs_data} == _collector_alerts() != set()
    assert len(QUERIES) - len(runbook) == len(panel_queries()) >= 30


def test_grafana_variables_are_computed_for_every_dashboards_range() -> None:
    """Every dashboard opens on the range GRAFANA_VARIABLES' interval values are derived from."""
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        assert json.loads(path.read_text())["time"] == DASHBOARD_RANGE, path.name


@pytest.mark.timeout(DEMO_TIMEOUT_SECONDS + DATA_DEADLINE_SECONDS + 60)
@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.where)
def test_documented_query_runs_on_the_live_prometheus(query: DocQuery, after_demo: None) -> None:
    """The query answers success with no warnings; a collector alert's query returns data."""
    answer = _answer(query.expr)
    assert answer.get("status") == "success", f"{query.expr}\n{answer}"
    assert "warnings" not in answer, f"{query.expr}\n{answer['warnings']}"
    if query.needs_data:
        assert answer["data"]["result"], f"no series for {query.expr}"
