"""docs/runbook.md: one complete section per alert, parsable queries, existing references."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import PROMETHEUS_DIR, REPO, RUNBOOK, Rule, check_expressions

PARTS = ["Meaning", "Impact", "First queries", "Mitigation", "Escalation"]


def _sections() -> dict[str, str]:
    """The runbook's level-2 sections after the introduction, by heading."""
    chunks = re.split(r"^## ", RUNBOOK.read_text(), flags=re.M)[1:]
    return {chunk.split("\n", 1)[0].strip(): chunk for chunk in chunks}


def test_runbook_has_one_section_per_alert_and_no_other(alerts: list[Rule]) -> None:
    """The level-2 headings are exactly the alert names, each once (so each anchor resolves)."""
    headings = re.findall(r"^## (.+)$", RUNBOOK.read_text(), flags=re.M)
    assert sorted(headings) == sorted({a.name for a in alerts})


def test_every_section_has_all_parts_in_order() -> None:
    """Each section has Meaning, Impact, First queries, Mitigation, Escalation, in that order."""
    for name, text in _sections().items():
        assert re.findall(r"^### (.+)$", text, flags=re.M) == PARTS, name


def test_every_section_gives_promql_jaeger_and_logsql_queries() -> None:
    """First queries hold a PromQL block, a Zipkin Lens trace search, and a VictoriaLogs query."""
    for name, text in _sections().items():
        queries = text.split("### First queries", 1)[1].split("### Mitigation", 1)[0]
        assert "```promql\n" in queries, name
        assert "- Traces: http://127.0.0.1:9411/zipkin/" in queries, name
        assert re.search(r"- Logs: `_time:\w+ .+`", queries), name


def test_runbook_promql_parses(tmp_path: Path) -> None:
    """Every line of every promql block is a valid PromQL expression for promtool."""
    exprs = [
        line
        for block in re.findall(r"```promql\n(.*?)```", RUNBOOK.read_text(), flags=re.S)
        for line in block.splitlines()
        if line.strip()
    ]
    result = check_expressions(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_repository_paths_named_in_the_docs_exist() -> None:
    """Paths like `docs/...` or `infra/...` in the runbook and the rules README exist."""
    top = r"(?:docs|infra|services|stack|tests|collector-config)"
    for doc in (RUNBOOK, PROMETHEUS_DIR / "README.md"):
        for path in re.findall(rf"`({top}/[\w./-]*?)`", doc.read_text()):
            assert (REPO / path).exists(), f"{doc.name}: {path}"
