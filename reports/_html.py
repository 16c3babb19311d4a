"""The report as one self-contained HTML page: tables, inline SVG plots, and every query."""

from __future__ import annotations

from html import escape

from reports._model import AlertRow, Figure, Report, SloRow
from reports._period import api_time, rfc3339
from reports._svg import (
    GREY,
    ORANGE,
    RED,
    Bar,
    Lane,
    attainment_chart,
    burn_down_chart,
    timeline_chart,
)

_STYLE = """
body{font-family:sans-serif;margin:2em;max-width:1100px;color:#212121}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ddd;padding:4px 8px;font-size:13px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.n{text-align:right;font-variant-numeric:tabular-nums}
.met{color:#2e7d32;font-weight:bold} .missed{color:#c62828;font-weight:bold}
code{font-size:12px;word-break:break-all} .note{color:#616161;font-size:13px}
.warn{background:#fff3e0;border:1px solid #ef6c00;padding:.5em}
"""


def _pct(figure: Figure | None, digits: int = 4) -> str:
    if figure is None or figure.value is None:
        return "—" if figure is None or figure.raw is None else escape(figure.raw)
    return f"{figure.value * 100:.{digits}f}%"


def _num(figure: Figure | None) -> str:
    if figure is None or figure.value is None:
        return "—" if figure is None or figure.raw is None else escape(figure.raw)
    return f"{figure.value:,.1f}"


def _cell(figure: Figure | None, text: str) -> str:
    """A numeric cell whose tooltip holds the exact value and its query."""
    if figure is None:
        return f'<td class="n">{text}</td>'
    tip = f"{figure.raw} = {figure.promql} @ {api_time(figure.at_ms)}"
    return f'<td class="n" title="{escape(tip)}">{text}</td>'


def _duration(seconds: float) -> str:
    whole = round(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    return " ".join([*parts, f"{minutes}m", f"{secs:02d}s"]) if minutes or parts \
        else f"{secs}s"


def _slo_table(rows: tuple[SloRow, ...]) -> str:
    head = ("SLO", "service", "objective", "attainment", "met", "error ratio", "bad events",
            "events", "error budget", "budget burned", "budget left",
            "28-day budget left at the end")
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for row in rows:
        f = row.figures
        met = {True: '<span class="met">yes</span>', False: '<span class="missed">no</span>',
               None: "no events"}[row.met]
        out.append(
            f'<tr id="slo-{escape(row.slo)}"><td>{escape(row.slo)}</td>'
            f"<td>{escape(row.service)}</td>"
            + _cell(f["objective"], _pct(f["objective"], 2))
            + _cell(f["attainment"], _pct(f["attainment"]))
            + f"<td>{met}</td>"
            + _cell(f["error_ratio"], _pct(f["error_ratio"]))
            + _cell(f.get("bad_events"), _num(f.get("bad_events")))
            + _cell(f.get("events"), _num(f.get("events")))
            + _cell(f["budget"], _pct(f["budget"], 2))
            + _cell(f["budget_burned"], _pct(f["budget_burned"], 2))
            + _cell(f["budget_left"], _pct(f["budget_left"], 2))
            + _cell(f["budget_left_28d"], _pct(f["budget_left_28d"], 2))
            + "</tr>"
        )
    return "".join(out) + "</table>"


def _alert_table(report: Report) -> str:
    head = ("alert", "severity", "service", "other labels", "firing evaluations",
            "firing time", "episodes (first - last point firing; duration; pending since)")
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for row in report.alerts:
        other = ", ".join(f"{k}={v}" for k, v in sorted(row.labels.items())
                          if k not in ("alertname", "severity", "service", "cluster"))
        seconds = row.firing_seconds
        episodes = "<br>".join(
            f"{rfc3339(e.first_ms)} - {rfc3339(e.last_ms)}; {_duration(e.duration_s)}"
            + (f"; pending since {rfc3339(e.active_since_ms)}" if e.active_since_ms else "")
            for e in row.episodes
        ) or "between resolution points only"
        out.append(
            f"<tr><td>{escape(row.alertname)}</td>"
            f"<td>{escape(row.labels.get('severity', ''))}</td>"
            f"<td>{escape(row.labels.get('service', ''))}</td><td>{escape(other)}</td>"
            + _cell(row.evaluations, escape(row.evaluations.raw or "0"))
            + _cell(seconds, _duration(seconds.value) if seconds and seconds.value is not None
                    else "—")
            + f"<td>{episodes}</td></tr>"
        )
    return "".join(out) + "</table>"


def _lanes(alerts: tuple[AlertRow, ...]) -> list[Lane]:
    colours = {"critical": RED, "warning": ORANGE}
    return [
        Lane(
            label=row.alertname + (f" ({row.labels['service']})"
                                   if row.labels.get("service") else ""),
            colour=colours.get(row.labels.get("severity", ""), GREY),
            spans=tuple((e.first_ms, e.last_ms + e.step_ms) for e in row.episodes),
        )
        for row in alerts
    ]


def _traces(report: Report) -> str:
    out: list[str] = []
    for service in report.traces:
        capped = (f" (the search's limit: the newest {service.limit} of the period)"
                  if service.searched >= service.limit else "")
        out.append(
            f'<h3 id="traces-{escape(service.service)}">{escape(service.service)}</h3>'
            f'<p class="note">{service.found} error traces found among {service.searched} '
            f'traces searched{capped}; <a href="{escape(service.search_url)}">the search in '
            "Jaeger</a>. The longest:</p>"
        )
        if not service.top:
            out.append("<p>none in the period.</p>")
            continue
        out.append("<table><tr><th>trace</th><th>start</th><th>duration</th><th>root span</th>"
                   "<th>spans (failed)</th><th>first failed span</th></tr>")
        for t in service.top:
            out.append(
                f'<tr><td><a href="{escape(t.link)}">{escape(t.link)}</a></td>'
                f"<td>{rfc3339(t.start_us // 1000)}</td>"
                f'<td class="n">{t.duration_us / 1000:,.1f} ms</td><td>{escape(t.root)}</td>'
                f'<td class="n">{t.span_count} ({t.error_spans})</td>'
                f"<td>{escape(t.first_error)}</td></tr>"
            )
        out.append("</table>")
    for missing in report.traces_missing:
        out.append(f"<h3>{escape(missing)}</h3><p>Jaeger holds no traces of this service.</p>")
    return "".join(out)


def _queries(report: Report) -> str:
    out = ["<table><tr><th>figure</th><th>value (as the API wrote it)</th><th>PromQL</th></tr>"]
    for row in report.slos:
        for figure in row.figures.values():
            out.append(f"<tr><td>{escape(row.slo)}: {escape(figure.label)}</td>"
                       f"<td>{escape(str(figure.raw))}</td>"
                       f"<td><code>{escape(figure.promql)}</code></td></tr>")
    for alert in report.alerts:
        for shown in (alert.evaluations, alert.firing_seconds):
            if shown is not None:
                out.append(f"<tr><td>{escape(alert.alertname)}: {escape(shown.label)}</td>"
                           f"<td>{escape(str(shown.raw))}</td>"
                           f"<td><code>{escape(shown.promql)}</code></td></tr>")
    return "".join(out) + "</table>"


def render(report: Report) -> str:
    """The whole page."""
    p = report.period
    at = api_time(p.end_ms)
    warn = "" if report.settled else (
        '<p class="warn">Prometheus had not yet evaluated every rule group and scraped every '
        "target past the period's end when the report ran (" + escape(
            ", ".join(report.behind[:5])) + "): a figure re-run later may differ slightly.</p>")
    bars = [Bar(name=row.slo, attainment=row.figures["attainment"].value,
                objective=row.figures["objective"].value) for row in report.slos]
    burn = "".join(
        f"<h3>{escape(row.slo)}</h3>" + burn_down_chart(
            f"plot-burn-down-{row.slo}",
            f"{row.slo}: error budget left over the period",
            row.burn_down.points, p.start_ms, p.end_ms)
        for row in report.slos
    )
    step = report.alert_step_ms / 1000
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>SLA report {rfc3339(p.start_ms)} - {rfc3339(p.end_ms)}</title>
<style>{_STYLE}</style></head><body>
<h1>SLA report</h1>
<p>Period <b>{rfc3339(p.start_ms)}</b> to <b>{rfc3339(p.end_ms)}</b> ({escape(p.promql_range)}).
Every figure is one PromQL instant query evaluated at the period's end (<code>time={at}</code>)
on {escape(report.prometheus)} (Prometheus {escape(report.prometheus_version)}); hover a number
for its exact value and query, or see <a href="#queries">Queries</a> and <code>sla.json</code>.
Generated {rfc3339(report.generated_ms)}.</p>
{warn}
<h2 id="slos">SLOs</h2>
<p class="note">attainment = 1 - bad / all, with bad and all the sums over the period of the SLO's
recorded 5m rates (<code>slo:sli_bad_events:rate5m</code>, <code>slo:sli_events:rate5m</code>);
budget burned = error ratio / error budget; budget left = 1 - budget burned (below 0: the SLO
was missed). Events are those sums times the rules' evaluation interval: the number of events,
except that the 5 minutes at each edge of the period count in part.</p>
{_slo_table(report.slos)}
{attainment_chart(bars)}
<h2 id="burn-down">Error budget over the period</h2>
<p class="note">Budget left at each time: 1 - (bad events so far / all events of the period) /
error budget, from sums of the recorded 5m rates over slices of
{report.slice_ms / 1000:g} s (range queries in
<code>sla.json</code>).</p>
{burn}
<h2 id="alerts">Alerts that fired</h2>
<p class="note">Firing evaluations: samples of <code>ALERTS{{alertstate="firing"}}</code> in the
period, one per evaluation of the alert's rule group; firing time = that count times the
group's interval. Episodes: a range query of the same series from the period's start to its end
at a resolution of {step:g} s; an episode's duration is its points times {step:g} s (within
{step:g} s of the truth; a shorter firing can fall between points); "pending since" is
<code>ALERTS_FOR_STATE</code> at its first point.</p>
{_alert_table(report)}
{timeline_chart(_lanes(report.alerts), p.start_ms, p.end_ms)}
<h2 id="traces">Error traces</h2>
<p class="note">From Jaeger's API: traces of each SLO's service in the period with a failed span
(status ERROR, shown by Jaeger as <code>error=true</code>; the tail sampler keeps every such
trace), the longest first.</p>
{_traces(report)}
<h2 id="queries">Queries</h2>
{_queries(report)}
</body></html>
"""

