"""Grafana dashboards: the six expected, built from their builder, valid queries on known series."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import Rule, check_expressions
from .dashboard_queries import DASHBOARDS_DIR, panel_queries

EXPECTED = {
    "overview.json", "gateway.json", "conversation-worker.json", "tool-executor.json",
    "kafka-dlq.json", "pipeline.json",
}


def test_the_six_dashboards_exist() -> None:
    """Overview and SLOs, gateway, worker, tool executor, Kafka and DLQ, pipeline health."""
    assert {p.name for p in DASHBOARDS_DIR.glob("*.json")} == EXPECTED


def test_dashboard_files_match_their_builder(tmp_path: Path) -> None:
    """Running build_dashboards.py reproduces the committed JSON files byte for byte."""
    shutil.copy(DASHBOARDS_DIR / "build_dashboards.py", tmp_path)
    subprocess.run([sys.executable, str(tmp_path / "build_dashboards.py")], check=True, timeout=60)
    for name in EXPECTED:
        assert (tmp_path / name).read_text() == (DASHBOARDS_DIR / name).read_text(), name


def test_every_panel_has_an_id_a_title_and_a_prometheus_query() -> None:
    """Panel ids are unique per dashboard; every panel queries the datasource variable."""
    uids = set()
    for path in DASHBOARDS_DIR.glob("*.json"):
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in dashboard["panels"]:
            assert panel["title"] and panel["targets"], (path.name, panel["title"])
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert len(uids) == len(EXPECTED)


def test_every_panel_query_parses(tmp_path: Path) -> None:
    """promtool accepts every panel's expression (each becomes a recording rule to check)."""
    queries = panel_queries()
    assert len(queries) >= 30
    result = check_expressions([q.expr for q in queries], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_recorded_series_in_panels_are_recorded_by_the_rules(records: list[Rule]) -> None:
    """Every level:metric:operations name a panel uses is produced by a recording rule."""
    recorded = {r.name for r in records}
    for query in panel_queries():
        for name in re.findall(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", query.expr):
            assert name in recorded, (query.dashboard, query.panel, name)
