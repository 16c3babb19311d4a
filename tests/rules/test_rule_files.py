"""Rule files: promtool checks and unit tests, and the properties every rule must have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from .conftest import (
    CLUSTER,
    PROMETHEUS_DIR,
    RULES_DIR,
    RUNBOOK_URL,
    Rule,
    load_rules,
    rule_files,
    run,
)

#: The seed's alert rules, kept unchanged as test data beside the tests that reproduce each
#: defect: outside infra/prometheus, so that nothing that loads that tree finds them.
SEED_DIR = Path(__file__).resolve().parent / "seed_defects"
SEVERITIES = {"critical", "warning", "none"}


def _test_files_of(rule_file: Path) -> list[Path]:
    """The promtool test files that load rule_file."""
    return sorted(RULES_DIR.glob(f"{rule_file.stem}_*test.yml"))


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_rule_file_passes_promtool_check(path: Path) -> None:
    """`promtool check rules` accepts the file (syntax, PromQL, templates, no duplicates)."""
    result = run("promtool", "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "path", [*sorted(RULES_DIR.glob("*_test.yml")), SEED_DIR / "seed_alerts_test.yml"],
    ids=lambda p: p.name,
)
def test_promtool_unit_tests_pass(path: Path) -> None:
    """Every promtool unit test file passes, including the seed-defect reproductions."""
    result = run("promtool", "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_every_rule_is_exercised_by_its_test_files(path: Path) -> None:
    """Each alert of the file is named in an alert_rule_test, each record in a promql_expr_test."""
    tests = [yaml.safe_load(p.read_text()) for p in _test_files_of(path)]
    assert tests, f"no {path.stem}_test.yml beside {path.name}"
    groups = [g for t in tests for g in t["tests"]]
    tested_alerts = {case["alertname"] for g in groups for case in g.get("alert_rule_test", [])}
    tested_exprs = " ".join(case["expr"] for g in groups for case in g.get("promql_expr_test", []))
    rules = [r for r in load_rules("alert") + load_rules("record") if r.file == path]
    untested = [
        r.name for r in rules
        if (r.name not in tested_alerts if "alert" in r.body else r.name not in tested_exprs)
    ]
    assert not untested, f"rules without a test: {untested}"


def test_every_alert_has_severity_service_and_cluster(alerts: list[Rule]) -> None:
    """Alerts carry severity, cluster (for inhibition) and service (static or from the series)."""
    for alert in alerts:
        labels = alert.body.get("labels", {})
        assert labels.get("severity") in SEVERITIES, alert.name
        assert labels.get("cluster") == CLUSTER, alert.name
        service_from_series = re.search(r'label_replace\(.*"service"', alert.body["expr"], re.S)
        assert labels.get("service") or service_from_series, alert.name


def test_every_alert_has_summary_and_humanized_value_in_description(alerts: list[Rule]) -> None:
    """Alerts have a summary and a description that shows the value through a humanize function."""
    for alert in alerts:
        annotations = alert.body.get("annotations", {})
        assert annotations.get("summary"), alert.name
        assert re.search(r"\{\{ \$value \| humanize\w* \}\}", annotations.get("description", "")), (
            alert.name
        )


def test_every_alert_links_its_own_runbook_section(alerts: list[Rule]) -> None:
    """runbook_url is the runbook's base URL plus the alert name lowercased (its heading anchor)."""
    for alert in alerts:
        assert alert.body["annotations"]["runbook_url"] == f"{RUNBOOK_URL}#{alert.name.lower()}"


def test_recording_rules_are_named_level_metric_operations(records: list[Rule]) -> None:
    """Record names have the form level:metric:operations, in lower snake case."""
    for record in records:
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", record.name), record.name


def test_every_seed_alert_is_kept_with_its_for_severity_and_threshold(alerts: list[Rule]) -> None:
    """Each seed alert exists with the seed's `for`, severity and the threshold it compares with."""
    seed = [r for g in yaml.safe_load((SEED_DIR / "seed_alerts.yml").read_text())["groups"]
            for r in g["rules"]]
    by_name = {a.name: a.body for a in alerts}
    for s in seed:
        fixed = by_name.get(s["alert"])
        assert fixed is not None, f"seed alert {s['alert']} was dropped"
        assert fixed["for"] == s["for"], s["alert"]
        assert fixed["labels"]["severity"] == s["labels"]["severity"], s["alert"]
        op, value = re.findall(r"(>|==) *([0-9.]+)\s*$", s["expr"].strip())[-1]
        comparisons = re.findall(r"(>|==) *([0-9.]+)", fixed["expr"])
        assert (op, float(value)) in [(o, float(v)) for o, v in comparisons], s["alert"]


def test_readme_lists_every_rule_file_to_load() -> None:
    """infra/prometheus/README.md names each rule file, so prometheus.yml can load them all."""
    readme = (PROMETHEUS_DIR / "README.md").read_text()
    for path in rule_files():
        assert f"rules/{path.name}" in readme, path.name


def test_prometheus_config_passes_promtool_and_loads_every_rule_file() -> None:
    """`promtool check config` accepts prometheus.yml and checks each rule file through it."""
    result = run("promtool", "check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    for path in rule_files():
        assert f"Checking {path}" in result.stdout, f"prometheus.yml does not load {path.name}"


def test_every_rule_file_under_infra_prometheus_is_one_prometheus_loads() -> None:
    """No file in the config tree holds rule groups but the loaded rules/X.yml: a recursive
    load of infra/prometheus finds no defective copy of a real alert."""
    with_groups = set()
    for path in PROMETHEUS_DIR.rglob("*.y*ml"):
        document = yaml.safe_load(path.read_text())
        if isinstance(document, dict) and "groups" in document:
            with_groups.add(path)
    assert with_groups == set(rule_files())
