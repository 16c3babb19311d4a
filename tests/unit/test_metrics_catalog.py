"""docs/metrics.md equals the code: span- and collector-derived constants, the collector
config's renames, and the exported instruments."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    InMemoryMetricReader,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

from otel._catalog import (
    COLLECTOR_DERIVED_SERIES,
    REDACTION_SERIES,
    SPAN_DERIVED_SERIES,
    SeriesSpec,
)
from otel._instruments import LibraryInstruments
from otel._redaction_rules import rules
from services_instrumentation import conversation_worker, gateway, tool_executor

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "metrics.md"
COLLECTOR_CONFIG = REPO / "collector-config" / "config.yaml"
_RENAME = re.compile(
    r'^set\(metric\.name, "(?P<new>[^"]+)"\) where metric\.name == "(?P<old>[^"]+)"$'
)
_UNIT = re.compile(
    r'^set\(metric\.unit, "(?P<unit>[^"]*)"\) where metric\.name == "(?P<name>[^"]+)"$'
)
_SOURCES = {
    gateway.METER_NAME: "gateway",
    conversation_worker.METER_NAME: "conversation-worker",
    tool_executor.METER_NAME: "tool-executor",
    "otel": "library",
    "otel.dlq": "library",
    "otel.kafka": "library",
}


def _cell(text: str) -> str:
    return text.strip().strip("`")


def _documented() -> list[SeriesSpec]:
    """Rows of the ## Catalog table."""
    section = DOCS.read_text().split("## Catalog", 1)[1].split("\n## ", 1)[0]
    rows: list[SeriesSpec] = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        name, type_, labels, unit, buckets, source, instrument = (
            _cell(c) for c in line.strip().strip("|").split("|")
        )
        rows.append(SeriesSpec(
            name=name,
            type=type_,  # type: ignore[arg-type]
            labels=() if labels == "-" else tuple(x.strip() for x in labels.split(",")),
            unit="" if unit == "-" else unit,
            buckets=() if buckets == "-" else tuple(float(b) for b in buckets.split(",")),
            source=source,
            instrument=None if instrument == "-" else instrument,
        ))
    return rows


def _prometheus_name(name: str, unit: str, monotonic_sum: bool) -> str:
    """The name the collector's Prometheus exporter shows (unit suffix, then _total)."""
    suffix = {"s": "seconds", "By": "bytes"}.get(unit)
    if suffix and not name.endswith(f"_{suffix}") and f"_{suffix}_" not in name:
        name = f"{name}_{suffix}"
    if monotonic_sum and not name.endswith("_total"):
        name = f"{name}_total"
    return name


def _exported() -> list[SeriesSpec]:
    """Record once through every public method of every instrument set; read back the data."""
    reader = InMemoryMetricReader(
        preferred_temporality={
            Counter: AggregationTemporality.CUMULATIVE,
            UpDownCounter: AggregationTemporality.CUMULATIVE,
            Histogram: AggregationTemporality.CUMULATIVE,
        }
    )
    provider = MeterProvider(metric_readers=[reader])
    gw = gateway.create_instruments(provider)
    gw.session_created()
    gw.auth_attempt(result="success")
    gw.policy_evaluation(result="deny")
    with gw.websocket_connection():
        pass
    cw = conversation_worker.create_instruments(provider)
    cw.slm_tokens_used(model="m", input_tokens=3, output_tokens=4)
    cw.budget_consumed(tenant="t", persona_id="p", tokens=7)
    cw.budget_limit_hit(tenant="t", persona_id="p")
    cw.intent_classified(intent="chat")
    te = tool_executor.create_instruments(provider)
    te.tool_blocked(tool_name="rm", tenant="t")
    with te.sandbox_execution():
        pass
    te.resource_usage(tool_name="rm", cpu_seconds=0.25, memory_bytes=2_000_000)
    lib = LibraryInstruments(provider)
    lib.dlq_event(source_topic="tool.requests", error_type="invalid_event")
    lib.trace_context_invalid(source="header", reason="malformed")
    lib.scrubbed(signal="logs", rule="token")

    data = reader.get_metrics_data()
    assert data is not None
    series: list[SeriesSpec] = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = list(metric.data.data_points)
                labels = {tuple(sorted((p.attributes or {}).keys())) for p in points}
                assert len(labels) == 1, f"{metric.name} recorded with differing label sets"
                if isinstance(metric.data, HistogramData):
                    point = points[0]
                    assert isinstance(point, HistogramDataPoint)
                    type_, buckets, monotonic = "histogram", tuple(point.explicit_bounds), False
                elif isinstance(metric.data, Gauge):
                    type_, buckets, monotonic = "gauge", (), False
                else:
                    assert isinstance(metric.data, Sum)
                    monotonic = metric.data.is_monotonic
                    type_, buckets = ("counter" if monotonic else "gauge"), ()
                shown = _prometheus_name(metric.name, metric.unit or "", monotonic)
                series.append(SeriesSpec(
                    name=shown,
                    type=type_,  # type: ignore[arg-type]
                    labels=labels.pop(),
                    unit=metric.unit or "",
                    buckets=buckets,
                    source=_SOURCES[sm.scope.name],
                    instrument=None if shown == metric.name else metric.name,
                ))
    provider.shutdown()
    return series


def _key(s: SeriesSpec) -> tuple[object, ...]:
    return (s.name, s.type, tuple(sorted(s.labels)), s.unit, s.buckets, s.source, s.instrument)


def test_span_derived_rows_equal_the_library_constants() -> None:
    """Each span-derived row of docs/metrics.md equals its SPAN_DERIVED_SERIES entry."""
    documented = {_key(s) for s in _documented() if s.source == "span-derived"}
    assert documented == {_key(s) for s in SPAN_DERIVED_SERIES}
    assert len(SPAN_DERIVED_SERIES) == 10


def test_collector_rows_equal_the_library_constants() -> None:
    """Each collector row of docs/metrics.md equals its COLLECTOR_DERIVED_SERIES entry."""
    documented = {_key(s) for s in _documented() if s.source == "collector"}
    assert documented == {_key(s) for s in COLLECTOR_DERIVED_SERIES}
    assert len(COLLECTOR_DERIVED_SERIES) == 1


def _pipeline_keeping_only(config: dict[str, Any], metric: str) -> dict[str, Any]:
    """The one metrics pipeline into the Prometheus exporter whose filter keeps only ``metric``."""
    keep_only = [f'metric.name != "{metric}"']
    found: list[dict[str, Any]] = [
        pipeline
        for name, pipeline in config["service"]["pipelines"].items()
        if name.split("/")[0] == "metrics" and "prometheus" in pipeline["exporters"]
        and any(config["processors"][p].get("metrics", {}).get("metric") == keep_only
                for p in pipeline["processors"] if p.split("/")[0] == "filter")
    ]
    assert len(found) == 1, f"metrics pipelines keeping only {metric}: {found}"
    return found[0]


@pytest.mark.parametrize("series", COLLECTOR_DERIVED_SERIES, ids=lambda s: s.name)
def test_each_collector_series_is_its_receiver_metric_renamed_with_its_labels_kept(
    series: SeriesSpec,
) -> None:
    """collector-config/config.yaml makes the row: a kafka_metrics pipeline keeps only the
    receiver's metric, renames it to the series with the row's unit, and no statement touches
    its attributes (so the labels are the receiver's, checked live by tests/pipeline)."""
    assert series.instrument is not None
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    pipeline = _pipeline_keeping_only(config, series.instrument)
    assert pipeline["receivers"] == ["kafka_metrics"]
    assert "consumers" in config["receivers"]["kafka_metrics"]["scrapers"]
    statements = [
        statement
        for p in pipeline["processors"] if p.split("/")[0] == "transform"
        for group in config["processors"][p]["metric_statements"]
        for statement in group["statements"]
    ]
    renames = [(m["old"], m["new"]) for s in statements if (m := _RENAME.match(s))]
    units = [(m["name"], m["unit"]) for s in statements if (m := _UNIT.match(s))]
    assert renames == [(series.instrument, series.name)]
    assert units == [(series.name, series.unit)]
    assert [s for s in statements if "attributes" in s] == []


def test_emitted_rows_equal_the_instruments_the_code_exports() -> None:
    """Every other row equals a series the instruments export (name as Prometheus shows it,
    type, label keys, unit, buckets, source), and no instrument is missing from the doc."""
    documented = {
        _key(s) for s in _documented()
        if s.source not in ("span-derived", "collector", "collector-redaction")
    }
    exported = [_key(s) for s in _exported()]
    assert len(exported) == len(set(exported)) == 16
    assert documented == set(exported)


def test_every_spec_series_is_catalogued_once() -> None:
    """The catalog has the spec's 22 metrics, the kafka_consumer_lag of its alert rules, the
    library's 4 and the collector's redaction counter, each once."""
    names = [s.name for s in _documented()]
    assert len(names) == len(set(names)) == 28


def test_the_redaction_row_is_the_counter_the_collector_renders() -> None:
    """The collector-redaction row equals REDACTION_SERIES, and the rendered
    signal_to_metrics/redactions sums every signal and rule into that monotonic counter with
    the row's unit, labelled by the row's labels once transform/redaction_labels renames them."""
    (row,) = [s for s in _documented() if s.source == "collector-redaction"]
    assert _key(row) == _key(REDACTION_SERIES)
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    definitions = [d for section in config["connectors"]["signal_to_metrics/redactions"].values()
                   for d in section]
    assert {(d["name"], d["unit"], d["sum"]["monotonic"]) for d in definitions} == {
        (REDACTION_SERIES.instrument, REDACTION_SERIES.unit, True)}
    assert len(definitions) == 3 * len(rules().key_rules)
    labels = config["processors"]["transform/redaction_labels"]["metric_statements"][0]
    renamed = {m.group(1) for st in labels["statements"]
               if (m := re.match(r'set\(datapoint\.attributes\["([a-z]+)"\]', st))}
    assert renamed == set(REDACTION_SERIES.labels)


def test_units_are_seconds_bytes_or_annotations_never_one() -> None:
    """No unit the code creates is '1' or empty: s, By, or a {annotation} (the collector's
    cleared unit is checked against its config above)."""
    units = {s.unit for s in _documented() if s.source != "collector"}
    assert all(u in ("s", "By") or re.fullmatch(r"\{[a-z]+\}", u) for u in units), units
