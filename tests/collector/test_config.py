"""The collector's config: it loads, its RED derivation matches the metric catalog, and its
tail sampler waits out the services' longest retry and timeout chain."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from otel._catalog import SPAN_DERIVED_SERIES, SeriesSpec
from services.common.kafka import RETRY_POLICY
from services.common.settings import Settings
from stack.components import COLLECTOR_FEATURE_GATES
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
        [str(_collector()), "validate", COLLECTOR_FEATURE_GATES, "--config", str(config)],
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


#: The SDK's BatchSpanProcessor schedule delay (OTEL_BSP_SCHEDULE_DELAY default): a span
#: reaches the collector up to this long after it ends.
SDK_EXPORT_DELAY_S = 5.0


def longest_chain_seconds() -> float:
    """The longest a conversation's spans keep arriving after its first, as the services are
    configured: every handler attempt of the worker's retry policy waits the tool-result
    timeout and then the SLM timeout, with the back-off ceilings between attempts."""
    settings = Settings.from_env()
    policy = RETRY_POLICY
    attempt = settings.tool_result_timeout + settings.slm_timeout
    waits = sum(policy.backoff.ceiling(n) for n in range(1, policy.max_attempts))
    return policy.max_attempts * attempt + waits


def test_decision_wait_outlasts_the_longest_retry_and_timeout_chain() -> None:
    """The sampler holds an unmatched trace longer than the services' longest retry/timeout
    chain plus the SDK's export delay, so an error at its end still keeps the whole trace."""
    sampler = yaml.safe_load(CONFIG.read_text())["processors"]["tail_sampling"]
    assert sampler["sampling_strategy"] == "span-ingest"
    chain = longest_chain_seconds()
    assert chain == pytest.approx(150.6)
    assert _seconds(sampler["decision_wait"]) >= chain + SDK_EXPORT_DELAY_S + 20


def test_sampler_capacity_alert_fires_at_95_percent_of_num_traces() -> None:
    """OtelCollectorSamplerAtCapacity's threshold is 95% of the sampler's num_traces, so the
    alert and the collector config cannot drift apart."""
    num_traces = yaml.safe_load(CONFIG.read_text())["processors"]["tail_sampling"]["num_traces"]
    rules = yaml.safe_load((CONFIG.parents[1] / "infra/prometheus/rules/pipeline.yml").read_text())
    (alert,) = [r for g in rules["groups"] for r in g["rules"]
                if r.get("alert") == "OtelCollectorSamplerAtCapacity"]
    threshold = re.search(r">= (\d+)\s*$", alert["expr"])
    assert threshold is not None, alert["expr"]
    assert int(threshold[1]) == num_traces * 95 // 100
    assert f"({num_traces:,})" in alert["annotations"]["description"]
