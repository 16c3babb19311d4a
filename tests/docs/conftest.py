"""The docs tests drive the real services (the services fixture) and report how many queries ran."""

from __future__ import annotations

import pytest

from tests.services.conftest import services

__all__ = ["services"]

QUERY_TEST = "tests/docs/test_live_queries.py::test_documented_query_runs_on_the_live_prometheus"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """After the run: how many documented queries ran (passed or failed), by document."""
    ran = [
        report.nodeid
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if report.when == "call" and report.nodeid.startswith(QUERY_TEST)
    ]
    if ran:
        runbook = sum("[runbook:" in nodeid for nodeid in ran)
        terminalreporter.write_line(
            f"{len(ran)} documented PromQL queries ran against the live Prometheus: "
            f"{runbook} of docs/runbook.md, {len(ran) - runbook} of docs/dashboards/"
        )
