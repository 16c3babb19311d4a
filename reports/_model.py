"""What an SLA report holds: every figure with the query it came from, and its JSON form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reports._jaeger import ServiceTraces
from reports._period import Period, api_time, rfc3339
from reports._prometheus import finite_or_none


@dataclass(frozen=True)
class Figure:
    """One number of the report: the instant query that gives it, when, and its answer.

    ``raw`` is the value exactly as Prometheus's API wrote it (``"NaN"`` included), or None
    when the query returned no series.
    """

    name: str
    label: str
    promql: str
    at_ms: int
    raw: str | None

    @property
    def value(self) -> float | None:
        """The value as a finite float, or None (no series, NaN or infinite)."""
        return None if self.raw is None else finite_or_none(self.raw)

    def to_json(self) -> dict[str, Any]:
        """The figure as sla.json writes it."""
        return {
            "label": self.label,
            "value": self.value,
            "raw": self.raw,
            "promql": self.promql,
            "time": api_time(self.at_ms),
            "time_rfc3339": rfc3339(self.at_ms),
        }


@dataclass(frozen=True)
class RangeQuery:
    """A range query as it was run: re-running it gives the same points."""

    promql: str
    start_ms: int
    end_ms: int
    step_ms: int

    def to_json(self) -> dict[str, Any]:
        """The query as sla.json writes it (times as the API takes them)."""
        return {
            "promql": self.promql,
            "start": api_time(self.start_ms),
            "end": api_time(self.end_ms),
            "step": api_time(self.step_ms),
        }


@dataclass(frozen=True)
class RangeResult:
    """A range query and the one series it returned, values as the API wrote them."""

    query: RangeQuery
    values: tuple[tuple[int, str], ...]

    def to_json(self) -> dict[str, Any]:
        """The query and its points as sla.json writes them."""
        return {**self.query.to_json(), "values": [[api_time(t), raw] for t, raw in self.values]}


@dataclass(frozen=True)
class BurnDown:
    """An SLO's error budget left over the period, from consecutive slices of it.

    ``head`` gives the first slice's sums of the recorded bad and all event rates (instant
    queries), ``bad`` and ``events`` those of every later slice (range queries, one point per
    slice end). The points are (time, budget left): 1 at the start, then at each slice end
    ``1 - (bad summed up to it / events summed over the period) / budget``; none without events
    or budget.
    """

    head: tuple[Figure, Figure]
    bad: RangeResult
    events: RangeResult
    points: tuple[tuple[int, float], ...]

    def to_json(self) -> dict[str, Any]:
        """The burn-down as sla.json writes it."""
        return {
            "head_slice": {"bad": self.head[0].to_json(), "events": self.head[1].to_json()},
            "bad_slices": self.bad.to_json(),
            "event_slices": self.events.to_json(),
            "points": [[api_time(t), left] for t, left in self.points],
        }


@dataclass(frozen=True)
class SloRow:
    """One SLO's figures over the period."""

    slo: str
    service: str
    figures: dict[str, Figure]
    burn_down: BurnDown

    @property
    def met(self) -> bool | None:
        """Whether attainment reached the objective; None without traffic or budget."""
        attained, objective = self.figures["attainment"].value, self.figures["objective"].value
        if attained is None or objective is None:
            return None
        return attained >= objective

    def to_json(self) -> dict[str, Any]:
        """The row as sla.json writes it."""
        return {
            "slo": self.slo,
            "service": self.service,
            "met": self.met,
            "figures": {name: f.to_json() for name, f in self.figures.items()},
            "burn_down": self.burn_down.to_json(),
        }


@dataclass(frozen=True)
class Episode:
    """A run of consecutive range-query points at which an alert was firing."""

    first_ms: int
    last_ms: int
    points: int
    step_ms: int
    active_since_ms: int | None  # ALERTS_FOR_STATE at the first point: when it went pending

    @property
    def duration_s(self) -> float:
        """Firing time at the query's resolution: points x step (within one step of the
        truth)."""
        return self.points * self.step_ms / 1000

    def to_json(self) -> dict[str, Any]:
        """The episode as sla.json writes it."""
        return {
            "first": api_time(self.first_ms),
            "last": api_time(self.last_ms),
            "first_rfc3339": rfc3339(self.first_ms),
            "last_rfc3339": rfc3339(self.last_ms),
            "points": self.points,
            "duration_seconds": self.duration_s,
            "active_since": None if self.active_since_ms is None
            else api_time(self.active_since_ms),
        }


@dataclass(frozen=True)
class AlertRow:
    """One alert series (alert name and labels) that fired during the period."""

    labels: dict[str, str]  # ALERTS labels without __name__ and alertstate
    rule_for_seconds: float | None
    evaluations: Figure  # firing samples in the period: one per rule evaluation
    firing_seconds: Figure | None  # evaluations x the rule group's interval
    episodes: tuple[Episode, ...]

    @property
    def alertname(self) -> str:
        """The alert's name."""
        return self.labels.get("alertname", "?")

    def to_json(self) -> dict[str, Any]:
        """The row as sla.json writes it."""
        return {
            "labels": self.labels,
            "rule_for_seconds": self.rule_for_seconds,
            "figures": {
                "firing_evaluations": self.evaluations.to_json(),
                **({"firing_seconds": self.firing_seconds.to_json()}
                   if self.firing_seconds else {}),
            },
            "episodes": [e.to_json() for e in self.episodes],
            "episodes_firing_seconds": sum(e.duration_s for e in self.episodes),
        }


@dataclass(frozen=True)
class Report:
    """The whole SLA report for one period."""

    period: Period
    generated_ms: int
    prometheus: str
    prometheus_version: str
    jaeger: str
    settled: bool
    behind: tuple[str, ...]
    slos: tuple[SloRow, ...]
    slice_ms: int
    alert_step_ms: int
    alert_episodes: RangeQuery
    alert_active_since: RangeQuery
    alerts: tuple[AlertRow, ...]
    traces: tuple[ServiceTraces, ...]
    traces_missing: tuple[str, ...]  # SLO services Jaeger holds no traces of

    def to_json(self) -> dict[str, Any]:
        """The report as sla.json writes it: every figure with its PromQL and time."""
        return {
            "report": "sla",
            "format": 1,
            "period": {
                "start": api_time(self.period.start_ms),
                "end": api_time(self.period.end_ms),
                "start_rfc3339": rfc3339(self.period.start_ms),
                "end_rfc3339": rfc3339(self.period.end_ms),
                "promql_range": self.period.promql_range,
            },
            "evaluated_at": api_time(self.period.end_ms),
            "generated_at": rfc3339(self.generated_ms),
            "sources": {
                "prometheus": self.prometheus,
                "prometheus_version": self.prometheus_version,
                "jaeger": self.jaeger,
            },
            "settled": self.settled,
            "not_settled": list(self.behind),
            "slos": [row.to_json() for row in self.slos],
            "burn_down_slice": api_time(self.slice_ms),
            "alerts": {
                "resolution_seconds": self.alert_step_ms / 1000,
                "episodes_query": self.alert_episodes.to_json(),
                "active_since_query": self.alert_active_since.to_json(),
                "series": [row.to_json() for row in self.alerts],
            },
            "traces": [
                {
                    "service": t.service,
                    "search": t.search_url,
                    "found": t.found,
                    "searched": t.searched,
                    "search_limit": t.limit,
                    "top": [
                        {
                            "trace_id": e.trace_id,
                            "link": e.link,
                            "start_rfc3339": rfc3339(e.start_us // 1000),
                            "duration_ms": e.duration_us / 1000,
                            "root": e.root,
                            "spans": e.span_count,
                            "error_spans": e.error_spans,
                            "first_error": e.first_error,
                        }
                        for e in t.top
                    ],
                }
                for t in self.traces
            ],
            "traces_missing": list(self.traces_missing),
        }
