"""Every PromQL query of the Grafana dashboards in docs/dashboards/, for checks against Prometheus.

    .venv/bin/python -m tests.rules.dashboard_queries [DIR]

prints one JSON object per query: dashboard file, panel title, refId and expr. The live test
(run after the demo workload) and tests/rules/test_dashboards.py both use panel_queries().
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "docs" / "dashboards"


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels in order, including those nested in rows (as Grafana saves collapsed rows)."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def panel_queries(directory: Path = DASHBOARDS_DIR) -> list[PanelQuery]:
    """The Prometheus queries of every panel of every dashboard JSON file in directory."""
    return [
        PanelQuery(path.name, panel["title"], target["refId"], target["expr"])
        for path in sorted(directory.glob("*.json"))
        for panel in _panels(json.loads(path.read_text())["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def main(argv: list[str]) -> int:
    """Print the queries of the given dashboard folder (default docs/dashboards) as JSON lines."""
    directory = Path(argv[1]) if len(argv) > 1 else DASHBOARDS_DIR
    for query in panel_queries(directory):
        print(json.dumps(asdict(query)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
