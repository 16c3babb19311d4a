"""Build the SLA report from the live APIs: every figure is one PromQL query at the period's end.

SLO figures read the recordings of ``infra/prometheus/rules/slo.yml`` (``slo:sli_bad_events:
rate5m``, ``slo:sli_events:rate5m``, ``slo:error_budget:ratio``,
``slo:error_budget_remaining:ratio28d``); alerts read ``ALERTS`` and ``ALERTS_FOR_STATE``;
traces come from Jaeger. docs/sla-report.md gives every formula.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from reports._http import SourceError
from reports._jaeger import Jaeger, ServiceTraces
from reports._model import (
    AlertRow,
    BurnDown,
    Episode,
    Figure,
    RangeQuery,
    RangeResult,
    Report,
    SloRow,
)
from reports._period import Period, promql_duration
from reports._prometheus import Prometheus, Rule

#: Slices of the burn-down curve: about this many, none shorter than the SLO rules' interval.
BURN_DOWN_SLICES = 120
MIN_SLICE_MS = 15_000
#: Alert resolutions the report picks from: the first that keeps a range query under
#: Prometheus's 11,000 points per series.
ALERT_STEPS_S = (15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
MAX_POINTS = 11_000


def quote(value: str) -> str:
    """``value`` as a PromQL string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def selector(metric: str, labels: dict[str, str]) -> str:
    """``metric{...}`` matching exactly ``labels`` (alertname first, then by name)."""
    keys = sorted(labels, key=lambda k: (k != "alertname", k))
    return metric + "{" + ",".join(f"{k}={quote(labels[k])}" for k in keys) + "}"


def default_alert_step_ms(period: Period) -> int:
    """The alert resolution: the finest of ALERT_STEPS_S within MAX_POINTS points."""
    for step in ALERT_STEPS_S:
        if period.length_ms // (step * 1000) + 1 <= MAX_POINTS:
            return step * 1000
    return math.ceil(period.length_ms / (MAX_POINTS - 1) / 1000) * 1000


class _Builder:
    """One report's queries against one Prometheus at one evaluation time."""

    def __init__(self, prometheus: Prometheus, period: Period) -> None:
        self.prom = prometheus
        self.period = period
        self.range = period.promql_range

    def figure(self, name: str, label: str, promql: str, *, at_ms: int | None = None) -> Figure:
        """Run ``promql`` at ``at_ms`` (default: the period's end); one series at most."""
        at = self.period.end_ms if at_ms is None else at_ms
        samples = self.prom.query(promql, at_ms=at)
        if len(samples) > 1:
            raise SourceError(
                f"{promql} returned {len(samples)} series, the report needs one: "
                + "; ".join(str(s.labels) for s in samples[:5])
            )
        return Figure(name=name, label=label, promql=promql, at_ms=at,
                      raw=samples[0].raw if samples else None)

    # -- SLOs -------------------------------------------------------------------------------

    def slos(self) -> list[tuple[str, str]]:
        """(slo, service) of every SLO whose budget was recorded during the period."""
        samples = self.prom.query(
            f"group by (slo, service) (last_over_time(slo:error_budget:ratio[{self.range}]))",
            at_ms=self.period.end_ms,
        )
        return sorted((s.labels.get("slo", ""), s.labels.get("service", "")) for s in samples)

    def slo_row(self, slo: str, service: str, rules: list[Rule], slice_ms: int) -> SloRow:
        """Every figure of ``slo`` over the period, and its burn-down."""
        sel = "{slo=" + quote(slo) + "}"
        r = self.range
        bad = f"sum_over_time(slo:sli_bad_events:rate5m{sel}[{r}])"
        events = f"sum_over_time(slo:sli_events:rate5m{sel}[{r}])"
        budget = f"last_over_time(slo:error_budget:ratio{sel}[{r}])"
        ratio = f"{bad} / {events}"
        interval = _interval(rules, "slo:sli_events:rate5m", slo)
        queries = {
            "objective": ("objective", f"1 - {budget}"),
            "attainment": ("attainment", f"1 - {ratio}"),
            "error_ratio": ("error ratio", ratio),
            "bad_events": ("bad events (from the 5m rates)",
                           f"{_number(interval)} * {bad}" if interval else ""),
            "events": ("events (from the 5m rates)",
                       f"{_number(interval)} * {events}" if interval else ""),
            "budget": ("error budget", budget),
            "budget_burned": ("budget burned", f"({ratio}) / {budget}"),
            "budget_left": ("budget left", f"1 - ({ratio}) / {budget}"),
            "budget_left_28d": ("28-day budget left at the end",
                                f"slo:error_budget_remaining:ratio28d{sel}"),
        }
        figures = {
            name: self.figure(name, label, promql)
            for name, (label, promql) in queries.items()
            if promql
        }
        return SloRow(slo=slo, service=service, figures=figures,
                      burn_down=self.burn_down(sel, figures["budget"].value, slice_ms))

    def burn_down(self, sel: str, budget: float | None, slice_ms: int) -> BurnDown:
        """Budget left over the period, from the sums of the 5m rates over its slices.

        The period [start, end] is cut into a head slice [start, start + rest] (closed, as the
        period's own range is in Prometheus 2.x) and slices (t - slice, t] up to ``end``, whose
        range selectors are 1 ms shorter than a slice so that no sample counts twice: the
        slices' sums add up to the period's.
        """
        start, end = self.period.start_ms, self.period.end_ms
        rest = self.period.length_ms % slice_ms or slice_ms
        head_at = start + rest
        head = tuple(
            self.figure(f"head_{name}", f"{name}, first slice",
                        f"sum_over_time(slo:{metric}:rate5m{sel}[{promql_duration(rest)}])",
                        at_ms=head_at)
            for name, metric in (("bad", "sli_bad_events"), ("events", "sli_events"))
        )
        width = promql_duration(slice_ms - 1)
        slices = tuple(
            self.slices(RangeQuery(f"sum_over_time(slo:{metric}:rate5m{sel}[{width}])",
                                   head_at + slice_ms, end, slice_ms))
            for metric in ("sli_bad_events", "sli_events")
        )
        bad = [(head_at, head[0].value or 0.0), *_finite(slices[0].values)]
        total = (head[1].value or 0.0) + sum(v for _, v in _finite(slices[1].values))
        points: list[tuple[int, float]] = []
        if budget and total > 0:
            spent = 0.0
            points.append((start, 1.0))
            for t, value in bad:
                spent += value
                points.append((t, 1 - spent / total / budget))
        return BurnDown(head=(head[0], head[1]), bad=slices[0], events=slices[1],
                        points=tuple(points))

    def slices(self, query: RangeQuery) -> RangeResult:
        """Run ``query`` (one series at most); keep its points as the API wrote them."""
        if query.start_ms > query.end_ms:
            return RangeResult(query=query, values=())
        found = self.prom.query_range(query.promql, start_ms=query.start_ms,
                                      end_ms=query.end_ms, step_ms=query.step_ms)
        if len(found) > 1:
            raise SourceError(f"{query.promql} returned {len(found)} series, the report needs one")
        return RangeResult(query=query, values=found[0].points if found else ())

    # -- alerts -----------------------------------------------------------------------------

    def alerts(self, rules: list[Rule], step_ms: int) -> tuple[RangeQuery, RangeQuery,
                                                               list[AlertRow]]:
        """Alerts firing at any evaluation in the period: counts, durations, episodes."""
        start, end, r = self.period.start_ms, self.period.end_ms, self.range
        counted = {
            _key(s.labels): s
            for s in self.prom.query(f'count_over_time(ALERTS{{alertstate="firing"}}[{r}])',
                                     at_ms=end)
        }
        episodes_q = RangeQuery('ALERTS{alertstate="firing"}', start, end, step_ms)
        since_q = RangeQuery("ALERTS_FOR_STATE", start, end, step_ms)
        runs = {
            _key(s.labels): s.points
            for s in self.prom.query_range(episodes_q.promql, start_ms=start, end_ms=end,
                                           step_ms=step_ms)
        }
        since = {
            _key(s.labels): dict(s.points)
            for s in self.prom.query_range(since_q.promql, start_ms=start, end_ms=end,
                                           step_ms=step_ms)
        }
        rows: list[AlertRow] = []
        for key in set(counted) | set(runs):
            labels = dict(key)
            firing = {**labels, "alertstate": "firing"}
            count_q = f"count_over_time({selector('ALERTS', firing)}[{r}])"
            evaluations = Figure(name="firing_evaluations", label="firing evaluations",
                                 promql=count_q, at_ms=end,
                                 raw=counted[key].raw if key in counted else None)
            rule = _alert_rule(rules, labels)
            seconds = None if rule is None else self.figure(
                "firing_seconds", "firing time (evaluations x rule interval)",
                f"{_number(rule.interval_seconds)} * {count_q}",
            )
            rows.append(AlertRow(
                labels=labels,
                rule_for_seconds=rule.for_seconds if rule else None,
                evaluations=evaluations,
                firing_seconds=seconds,
                episodes=tuple(_episodes(runs.get(key, ()), step_ms, since.get(key, {}))),
            ))
        rows.sort(key=lambda a: (a.episodes[0].first_ms if a.episodes else end,
                                 a.alertname, sorted(a.labels.items())))
        return episodes_q, since_q, rows


def _finite(values: tuple[tuple[int, str], ...]) -> list[tuple[int, float]]:
    """The points whose values are finite floats (a slice without samples has no point)."""
    return [(t, float(raw)) for t, raw in values if math.isfinite(float(raw))]


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """An alert series' identity: its labels without the metric name and alert state."""
    return tuple(sorted((k, v) for k, v in labels.items()
                        if k not in ("__name__", "alertstate")))


def _number(value: float) -> str:
    """``value`` as a PromQL number literal (``15``, ``0.5``)."""
    return str(int(value)) if value == int(value) else repr(value)


def _interval(rules: list[Rule], record: str, slo: str) -> float | None:
    """The evaluation interval of the group recording ``record`` for ``slo``."""
    return next((r.interval_seconds for r in rules
                 if r.kind == "recording" and r.name == record and r.labels.get("slo") == slo),
                None)


def _alert_rule(rules: list[Rule], labels: dict[str, str]) -> Rule | None:
    """The alerting rule that produces the series with ``labels`` (its name and its own
    labels match), if Prometheus still has it."""
    return next((r for r in rules
                 if r.kind == "alerting" and r.name == labels.get("alertname")
                 and all(labels.get(k) == v for k, v in r.labels.items())), None)


def _episodes(points: Iterable[tuple[int, str]], step_ms: int,
              since: dict[int, str]) -> list[Episode]:
    """Runs of points ``step_ms`` apart; each with ALERTS_FOR_STATE at its first point."""
    runs: list[list[int]] = []
    for t in sorted(t for t, _ in points):
        if runs and t - runs[-1][-1] == step_ms:
            runs[-1].append(t)
        else:
            runs.append([t])
    return [
        Episode(
            first_ms=run[0], last_ms=run[-1], points=len(run), step_ms=step_ms,
            active_since_ms=round(float(since[run[0]]) * 1000) if run[0] in since else None,
        )
        for run in runs
    ]


def build_report(
    *,
    prometheus: Prometheus,
    jaeger: Jaeger,
    period: Period,
    now_ms: int,
    traces_per_service: int = 5,
    trace_search_limit: int = 500,
    alert_step_ms: int | None = None,
    settle_timeout_s: float = 150.0,
) -> Report:
    """Query Prometheus and Jaeger for ``period``; return the report (nothing is written)."""
    version = prometheus.version()
    readiness = prometheus.wait_settled(after_ms=period.end_ms, timeout_s=settle_timeout_s)
    rules = prometheus.rules()
    builder = _Builder(prometheus, period)
    slice_ms = max(MIN_SLICE_MS, math.ceil(period.length_ms / BURN_DOWN_SLICES))
    slos = tuple(builder.slo_row(slo, service, rules, slice_ms)
                 for slo, service in builder.slos())
    step = alert_step_ms if alert_step_ms is not None else default_alert_step_ms(period)
    episodes_q, since_q, alerts = builder.alerts(rules, step)
    services = sorted({row.service for row in slos})
    known = set(jaeger.services())
    traces: list[ServiceTraces] = [
        jaeger.error_traces(s, start_ms=period.start_ms, end_ms=period.end_ms,
                            limit=trace_search_limit, top=traces_per_service)
        for s in services if s in known
    ]
    return Report(
        period=period, generated_ms=now_ms, prometheus=prometheus.base,
        prometheus_version=version, jaeger=jaeger.base, settled=readiness.settled,
        behind=readiness.behind, slos=slos, slice_ms=slice_ms, alert_step_ms=step,
        alert_episodes=episodes_q, alert_active_since=since_q, alerts=tuple(alerts),
        traces=tuple(traces), traces_missing=tuple(s for s in services if s not in known),
    )
