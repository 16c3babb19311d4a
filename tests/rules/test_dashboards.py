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
    """Running build_dashboards.py reproduces the committed Grafana and vmui JSON files byte for
    byte."""
    shutil.copy(DASHBOARDS_DIR / "build_dashboards.py", tmp_path)
    subprocess.run([sys.executable, str(tmp_path / "build_dashboards.py")], check=True, timeout=60)
    assert {p.name for p in (DASHBOARDS_DIR / "vmui").glob("*.json")} == EXPECTED
    for name in EXPECTED:
        assert (tmp_path / name).read_text() == (DASHBOARDS_DIR / name).read_text(), name
        vmui = (tmp_path / "vmui" / name).read_text()
        assert vmui == (DASHBOARDS_DIR / "vmui" / name).read_text(), name


def test_vmui_dashboards_have_the_grafana_panels_and_queries() -> None:
    """Each vmui dashboard has its Grafana dashboard's title, panel titles, queries and legends."""
    for name in EXPECTED:
        grafana = json.loads((DASHBOARDS_DIR / name).read_text())
        vmui = json.loads((DASHBOARDS_DIR / "vmui" / name).read_text())
        assert vmui["title"] == grafana["title"]
        panels = [p for row in vmui["rows"] for p in row["panels"]]
        expected = [
            (p["title"], [t["expr"] for t in p["targets"]],
             [t["legendFormat"] for t in p["targets"]])
            for p in grafana["panels"]
        ]
        assert [(p["title"], p["expr"], p["alias"]) for p in panels] == expected, name


def test_every_panel_links_to_traces_and_logs() -> None:
    """Grafana panels carry links to Zipkin Lens and VictoriaLogs; vmui panels carry the same
    links as Markdown in their description (vmui has no link field)."""
    for name in EXPECTED:
        grafana = json.loads((DASHBOARDS_DIR / name).read_text())
        vmui = json.loads((DASHBOARDS_DIR / "vmui" / name).read_text())
        vmui_panels = [p for row in vmui["rows"] for p in row["panels"]]
        for panel, vmui_panel in zip(grafana["panels"], vmui_panels, strict=True):
            urls = [link["url"] for link in panel["links"]]
            assert any(u.startswith("http://127.0.0.1:9411/zipkin/?serviceName=") for u in urls)
            assert any(u.startswith("http://127.0.0.1:9428/select/vmui/#/?query=") for u in urls)
            assert all(f"]({u})" in vmui_panel["description"] for u in urls), panel["title"]


def test_the_eight_spec_kpis_have_panels() -> None:
    """Sessions, auth, policy evaluations, intents, websockets, sandbox, CPU and memory (the
    spec series no rule uses) each appear in a panel query."""
    exprs = " ".join(q.expr for q in panel_queries())
    for series in (
        "sessions_created_total", "auth_attempts_total", "policy_evaluations_total",
        "intent_classification_total", "websocket_connections_active",
        "sandbox_active_executions", "resource_usage_cpu_seconds_total",
        "resource_usage_memory_bytes_",
    ):
        assert series in exprs, series


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
