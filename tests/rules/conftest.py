"""Paths and parsed rule files shared by the rule, Alertmanager, runbook and dashboard tests.

These tests need no running stack: they shell out to promtool and amtool (Debian's prometheus
and prometheus-alertmanager packages) and read the files under infra/prometheus/ and docs/.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "infra" / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/somaagent/observability/blob/main/docs/runbook.md"
CLUSTER = "somaagent01"


@dataclass(frozen=True)
class Rule:
    """One alerting or recording rule and the file it is in."""

    file: Path
    body: dict[str, Any]

    @property
    def name(self) -> str:
        """The alert or record name."""
        return str(self.body.get("alert") or self.body["record"])


def rule_files() -> list[Path]:
    """The rule files Prometheus loads (test files excluded)."""
    return sorted(p for p in RULES_DIR.glob("*.yml") if not p.stem.endswith("_test"))


def load_rules(kind: str) -> list[Rule]:
    """Every rule of the given kind ("alert" or "record") in the loaded rule files."""
    return [
        Rule(path, rule)
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if kind in rule
    ]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a command and return its result; stdout and stderr are captured as text."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


def check_expressions(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `promtool check rules` on a temporary file recording each expression."""
    rules = [{"record": f"check:expr:{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    return run("promtool", "check", "rules", path)


@pytest.fixture(scope="session")
def alerts() -> list[Rule]:
    """Every alerting rule."""
    return load_rules("alert")


@pytest.fixture(scope="session")
def records() -> list[Rule]:
    """Every recording rule."""
    return load_rules("record")
