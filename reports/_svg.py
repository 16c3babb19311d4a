"""The report's plots as inline SVG, drawn by hand: no plotting library is needed.

Each function returns one ``<svg>`` element with an ``id``, a ``<title>`` and plain shapes, so
the HTML page stays a single self-contained file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

WIDTH = 860
GREEN, RED, GREY, BLUE, ORANGE = "#2e7d32", "#c62828", "#9e9e9e", "#1565c0", "#ef6c00"
_FONT = 'font-family="sans-serif" font-size="11"'
#: Anchors of the five time-axis labels: the first and last stay inside the plot.
_ANCHORS = ("start", "middle", "middle", "middle", "end")


@dataclass(frozen=True)
class Bar:
    """One SLO of the attainment chart."""

    name: str
    attainment: float | None
    objective: float | None


@dataclass(frozen=True)
class Lane:
    """One alert series of the timeline: its label, colour and firing spans (ms)."""

    label: str
    colour: str
    spans: tuple[tuple[int, int], ...]


def _clock(ms: int, span_ms: int) -> str:
    """A time axis label: the date for long spans, hours and minutes otherwise."""
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.strftime("%m-%d %H:%M" if span_ms > 86_400_000 else "%H:%M:%S")


def _svg(ident: str, title: str, height: int, body: Sequence[str]) -> str:
    return (
        f'<svg id="{escape(ident)}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _pct(value: float, digits: int = 2) -> str:
    return f"{value * 100:.{digits}f}%"


def attainment_chart(bars: Sequence[Bar]) -> str:
    """Horizontal bars of attainment per SLO, each with its objective marked; green when
    met, red when missed, grey without traffic."""
    left, right, row = 220, WIDTH - 80, 30
    values = [v for b in bars for v in (b.attainment, b.objective) if v is not None]
    worst = max((1 - v for v in values), default=0.0)
    low = max(0.0, 1 - 1.5 * worst) if worst > 0 else 0.9

    def x(v: float) -> float:
        return left + (right - left) * (max(v, low) - low) / (1 - low)

    height = 40 + row * len(bars)
    body: list[str] = []
    for i in range(5):
        v = low + (1 - low) * i / 4
        body.append(f'<line x1="{x(v):.1f}" y1="10" x2="{x(v):.1f}" y2="{height - 25}" '
                    f'stroke="#e0e0e0"/>')
        body.append(f'<text x="{x(v):.1f}" y="{height - 10}" text-anchor="middle" {_FONT}>'
                    f"{_pct(v, 3 if 1 - low < 0.05 else 1)}</text>")
    for i, bar in enumerate(bars):
        y = 12 + i * row
        body.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" {_FONT}>'
                    f"{escape(bar.name)}</text>")
        if bar.attainment is None:
            body.append(f'<text x="{left + 4}" y="{y + 15}" {_FONT} fill="{GREY}">'
                        "no events</text>")
        else:
            met = bar.objective is None or bar.attainment >= bar.objective
            body.append(f'<rect x="{left}" y="{y + 4}" width="{x(bar.attainment) - left:.1f}" '
                        f'height="16" fill="{GREEN if met else RED}"/>')
            body.append(f'<text x="{x(bar.attainment) + 4:.1f}" y="{y + 16}" {_FONT}>'
                        f"{_pct(bar.attainment, 3)}</text>")
        if bar.objective is not None:
            xo = x(bar.objective)
            body.append(f'<line x1="{xo:.1f}" y1="{y}" x2="{xo:.1f}" y2="{y + 24}" '
                        'stroke="#000" stroke-width="2"/>')
    return _svg("plot-attainment", "Attainment per SLO (bar) against its objective (mark)",
                height, body)


def burn_down_chart(ident: str, title: str, points: Sequence[tuple[int, float]],
                    start_ms: int, end_ms: int) -> str:
    """The error budget left over the period: 100% at the start, 0% when spent."""
    left, right, top, bottom = 60, WIDTH - 20, 20, 170
    lows = [v for _, v in points]
    low = min(0.0, *lows) if lows else 0.0
    high = max(1.0, *lows) if lows else 1.0
    span = max(end_ms - start_ms, 1)

    def x(t: int) -> float:
        return left + (right - left) * (t - start_ms) / span

    def y(v: float) -> float:
        return bottom - (bottom - top) * (v - low) / (high - low)

    body = [f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
            'fill="none" stroke="#bdbdbd"/>']
    body.append(f'<line x1="{left}" y1="{y(0.0):.1f}" x2="{right}" y2="{y(0.0):.1f}" '
                f'stroke="{RED}" stroke-dasharray="4 3"/>')
    body.append(f'<text x="{right - 4}" y="{y(0.0) - 3:.1f}" text-anchor="end" {_FONT} '
                f'fill="{RED}">budget spent (0%)</text>')
    kept: list[float] = []
    for v in (1.0, low, 0.0, high, 0.5):  # by importance; none within 12 px of another
        if all(abs(y(v) - y(k)) >= 12 for k in kept):
            kept.append(v)
    for v in kept:
        if v != 0.0:
            body.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{right}" y2="{y(v):.1f}" '
                        'stroke="#e0e0e0"/>')
        body.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" {_FONT}>'
                    f"{_pct(v, 0)}</text>")
    for i in range(5):
        t = start_ms + span * i // 4
        body.append(f'<text x="{x(t):.1f}" y="{bottom + 16}" text-anchor="{_ANCHORS[i]}" '
                    f"{_FONT}>{_clock(t, span)}</text>")
    if points:
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        body.append(f'<polyline points="{coords}" fill="none" stroke="{BLUE}" '
                    'stroke-width="2"/>')
    else:
        body.append(f'<text x="{(left + right) / 2}" y="{(top + bottom) / 2}" '
                    f'text-anchor="middle" {_FONT} fill="{GREY}">no events in the period</text>')
    return _svg(ident, title, bottom + 26, body)


def timeline_chart(lanes: Sequence[Lane], start_ms: int, end_ms: int) -> str:
    """One lane per alert series, a bar per firing episode across the period."""
    left, right, row = 330, WIDTH - 20, 18
    span = max(end_ms - start_ms, 1)

    def x(t: int) -> float:
        return left + (right - left) * (min(max(t, start_ms), end_ms) - start_ms) / span

    height = 30 + row * max(len(lanes), 1)
    body: list[str] = []
    for i in range(5):
        t = start_ms + span * i // 4
        body.append(f'<line x1="{x(t):.1f}" y1="4" x2="{x(t):.1f}" y2="{height - 22}" '
                    'stroke="#e0e0e0"/>')
        body.append(f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="{_ANCHORS[i]}" '
                    f"{_FONT}>{_clock(t, span)}</text>")
    for i, lane in enumerate(lanes):
        y = 6 + i * row
        body.append(f'<text x="{left - 6}" y="{y + 11}" text-anchor="end" {_FONT}>'
                    f"{escape(lane.label[:52])}</text>")
        for first, last in lane.spans:
            body.append(f'<rect x="{x(first):.1f}" y="{y + 2}" '
                        f'width="{max(x(last) - x(first), 1.5):.1f}" height="12" '
                        f'fill="{lane.colour}"/>')
    if not lanes:
        body.append(f'<text x="{(left + right) / 2}" y="18" text-anchor="middle" {_FONT} '
                    f'fill="{GREY}">no alert fired in the period</text>')
    return _svg("plot-alerts", "Alerts firing over the period", height, body)
