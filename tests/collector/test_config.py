"""The collector's config: it loads, and its RED derivation matches the metric catalog."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from otel._catalog import SPAN_DERIVED_SERIES, SeriesSpec
from stack.stackctl import stack_paths

CONFIG = Path(__file__).resolve().parents[2] / "collector-config" / "config.yaml"
_SET_NAME = re.compile(
    r'^set\(metric\.name, "(?P<new>[^"]+)"\) where metric\.name == "(?P<old>[^"]+)"$'
)
_KEEP = re.compile(
    r"^(?:aggregate_on_attributes\(\"sum\", |keep_keys\(datapoint\.attributes, )"
    r"\[(?P<keys>[^\]]*)\]\) where (?P<cond>.+)$"
)


def _collector() -> Path:
    return stack_paths().cached("otelcol/*/otelcol-soma")


def _validate(config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_collector()), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        env={"SOMA_STACK_DATA": str(tmp_path)},
        timeout=60,
    )


def _seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(ms|s)", duration).groups()  # type: ignore[union-attr]
    return float(value) / (1000 if unit == "ms" else 1)


def _red_statements() -> list[str]:
    config = yaml.safe_load(CONFIG.read_text())
    groups = config["processors"]["transform/red_names"]["metric_statements"]
    return [s for g in groups for s in g["statements"]]


def _renames() -> dict[str, str]:
    """Spanmetrics metric name -> spec series name, from the transform's set(name, ...)."""
    return {m["new"]: m["old"] for s in _red_statements() if (m := _SET_NAME.match(s))}


def _kept_labels() -> dict[str, set[str]]:
    """Spanmetrics metric name -> the attribute keys kept (keep_keys or aggregate_on_attributes)."""
    kept: dict[str, set[str]] = {}
    for statement in _red_statements():
        if m := _KEEP.match(statement):
            keys = {k.strip().strip('"') for k in m["keys"].split(",") if k.strip()}
            for source in re.findall(r'metric\.name == "([^"]+)"', m["cond"]):
                kept[source] = keys
    return kept


def test_collector_loads_the_shipped_config(tmp_path: Path) -> None:
    """`otelcol-soma validate` accepts collector-config/config.yaml."""
    done = _validate(CONFIG, tmp_path)
    assert done.returncode == 0, done.stderr


def test_collector_rejects_a_config_with_an_unknown_key_naming_it(tmp_path: Path) -> None:
    """A misspelt key fails validation with an error that names the key."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(CONFIG.read_text().replace("decision_wait:", "decision_wiat:"))
    done = _validate(broken, tmp_path)
    assert done.returncode != 0
    assert "decision_wiat" in done.stderr


@pytest.mark.parametrize("series", SPAN_DERIVED_SERIES, ids=lambda s: s.name)
def test_each_span_derived_series_is_renamed_with_exactly_its_labels(series: SeriesSpec) -> None:
    """Every span-derived catalog series is produced by one rename, keeping only its labels."""
    renames, kept = _renames(), _kept_labels()
    assert series.name in renames, f"no set(name, {series.name!r}) in transform/red_names"
    source = renames[series.name]
    assert kept[source] == set(series.labels)


@pytest.mark.parametrize(
    "series", [s for s in SPAN_DERIVED_SERIES if s.type == "histogram"], ids=lambda s: s.name
)
def test_each_span_derived_histogram_has_the_spec_buckets_in_seconds(series: SeriesSpec) -> None:
    """The spanmetrics connector behind each histogram uses unit s and the spec's buckets."""
    config = yaml.safe_load(CONFIG.read_text())
    namespace = _renames()[series.name].split(".")[0]
    connector = config["connectors"][f"span_metrics/{namespace}"]
    assert connector["namespace"] == namespace
    assert connector["histogram"]["unit"] == "s"
    buckets = tuple(_seconds(b) for b in connector["histogram"]["explicit"]["buckets"])
    assert buckets == series.buckets
