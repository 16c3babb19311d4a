"""Prometheus's retention against the history the rules read (offline: the stack's definition)."""

from __future__ import annotations

import re

import pytest

from stack.components import components
from stack.stackctl import stack_paths

from .conftest import Rule

RETENTION_FLAG = "--storage.tsdb.retention.time="
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
DURATION_PART = re.compile(r"(\d+)(ms|[smhdwy])")
#: String literals, blanked before the brackets are read: a label regex like "[0-9]+" is no range.
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
#: A range selector [5m] or a subquery [5m:15s] (group 2 set for a subquery), and the offset
#: that may follow it.
BRACKET = re.compile(r"\[\s*(\w+)\s*(:\s*\w*\s*)?\](?:\s*offset\s+(\w+))?")
#: An offset on an instant selector (one that follows no bracket).
INSTANT_OFFSET = re.compile(r"(?<![\]\s])\s*\boffset\s+(\w+)")


def seconds(duration: str) -> float:
    """A Prometheus duration (5m, 1h30m, 28d) in seconds."""
    parts = DURATION_PART.findall(duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(int(n) * UNIT_SECONDS[u] for n, u in parts)


def _inside_parentheses_before(expr: str, end: int) -> str:
    """The text inside the parenthesised expression that closes just before ``end``."""
    close = len(expr[:end].rstrip()) - 1
    depth = 0
    for i in range(close, -1, -1):
        depth += {")": 1, "(": -1}.get(expr[i], 0)
        if depth == 0:
            return expr[i + 1 : close]
    raise AssertionError(f"unbalanced parentheses in {expr!r}")


def reach(expr: str) -> float:
    """How far back from the evaluation time ``expr`` reads, in seconds: its longest range
    selector, where a subquery reaches its own range plus the reach of the expression in it,
    and an offset adds to what it shifts."""
    expr = STRING.sub('""', expr)
    assert "@" not in expr, f"reach() does not count the @ modifier: {expr!r}"
    longest = max([0.0, *(seconds(o) for o in INSTANT_OFFSET.findall(expr))])
    for match in BRACKET.finditer(expr):
        back = seconds(match.group(1)) + (seconds(match.group(3)) if match.group(3) else 0)
        if match.group(2) is not None and expr[: match.start()].rstrip().endswith(")"):
            back += reach(_inside_parentheses_before(expr, match.start()))
        longest = max(longest, back)
    return longest


def configured_retention() -> float:
    """The retention, in seconds, on the command line the stack starts Prometheus with."""
    (prometheus,) = [c for c in components(stack_paths()) if c.name == "prometheus"]
    (flag,) = [a for a in prometheus.command if a.startswith(RETENTION_FLAG)]
    return seconds(flag.removeprefix(RETENTION_FLAG))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rate(x[5m])", "5m"),
        ("sum_over_time(a[28d]) / sum_over_time(b[3d])", "28d"),
        ("x[1h30m]", "1h30m"),
        ("max_over_time(rate(x[5m])[1h:1m])", "1h5m"),
        ("max_over_time(x[1d:5m])", "1d"),
        ('rate(label_replace(x, "c", "$1", "n", "[a-z]{9}")[5m:15s])', "5m"),
        ("increase(x[10m] offset 1h)", "1h10m"),
        ("x unless x offset 10m", "10m"),
    ],
)
def test_reach_adds_offsets_and_subquery_inner_ranges_to_the_longest_range(
    expr: str, expected: str
) -> None:
    """reach() is the longest [range], plus its offset and a subquery's inner reach."""
    assert reach(expr) == seconds(expected)


def test_prometheus_retention_covers_the_longest_range_any_rule_reads(
    alerts: list[Rule], records: list[Rule]
) -> None:
    """The stack's Prometheus keeps at least as much history as the furthest-reaching rule reads."""
    furthest = max(alerts + records, key=lambda r: reach(r.body["expr"]))
    longest = reach(furthest.body["expr"])
    assert configured_retention() >= longest, (
        f"retention {configured_retention() / 86400:g}d is shorter than the "
        f"{longest / 86400:g}d that {furthest.name} ({furthest.file.name}) reads"
    )
