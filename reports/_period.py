"""The report's period: parsing ``--from``/``--to`` and writing times and ranges for PromQL.

Every instant is kept as whole Unix milliseconds (Prometheus stores sample timestamps in
milliseconds), so a time written into a query and read back by a test is the same number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: Seconds per unit of a relative time (``-7d``) and of a PromQL duration, largest first.
_UNITS_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}
_RELATIVE = re.compile(r"^(?:now)?-((?:\d+[wdhms])+)$")
_PART = re.compile(r"(\d+)([wdhms])")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The shortest period the report accepts: a few evaluations of the 15 s SLO rules.
MIN_PERIOD_MS = 60_000


class PeriodError(ValueError):
    """A ``--from``/``--to`` value that is not a time, or a period that is not one."""


@dataclass(frozen=True)
class Period:
    """The half-open span of time the report covers, in Unix milliseconds."""

    start_ms: int
    end_ms: int

    @property
    def length_ms(self) -> int:
        """The period's length in milliseconds."""
        return self.end_ms - self.start_ms

    @property
    def promql_range(self) -> str:
        """The period's length as a PromQL duration (``7d``, ``1h30m``, ``612345ms``)."""
        return promql_duration(self.length_ms)


def parse_time(text: str, *, now_ms: int) -> int:
    """Parse ``now``, ``-7d``/``now-90m`` (w, d, h, m, s; combinable) or an RFC 3339 time."""
    value = text.strip()
    if value == "now":
        return now_ms
    relative = _RELATIVE.match(value)
    if relative:
        return now_ms - sum(int(n) * _UNITS_MS[unit] for n, unit in _PART.findall(relative[1]))
    try:
        stamp = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise PeriodError(
            f"{text!r} is not a time: use RFC 3339 (2026-11-26T10:00:00Z), now, or -7d "
            "(units w d h m s, combinable: -1h30m)"
        ) from None
    if stamp.tzinfo is None:
        raise PeriodError(f"{text!r} has no UTC offset: RFC 3339 needs one (Z or +01:00)")
    return (stamp - _EPOCH) // timedelta(milliseconds=1)


def parse_period(start: str, end: str, *, now_ms: int) -> Period:
    """The period from ``start`` to ``end``; it must end no later than now and last >= 1 min."""
    start_ms, end_ms = parse_time(start, now_ms=now_ms), parse_time(end, now_ms=now_ms)
    if end_ms <= start_ms:
        raise PeriodError(
            f"the period ends ({rfc3339(end_ms)}) before it starts ({rfc3339(start_ms)})"
        )
    if end_ms - start_ms < MIN_PERIOD_MS:
        raise PeriodError(
            f"the period lasts {promql_duration(end_ms - start_ms)}; the shortest is 1m"
        )
    if end_ms > now_ms:
        raise PeriodError(
            f"the period ends in the future ({rfc3339(end_ms)}, now is {rfc3339(now_ms)})"
        )
    return Period(start_ms=start_ms, end_ms=end_ms)


def promql_duration(ms: int) -> str:
    """``ms`` as a PromQL duration: whole days, hours, minutes, seconds, then milliseconds."""
    if ms <= 0:
        raise ValueError(f"a PromQL duration must be positive, not {ms} ms")
    parts: list[str] = []
    rest = ms
    for unit in ("d", "h", "m", "s"):
        count, rest = divmod(rest, _UNITS_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    if rest:
        parts.append(f"{rest}ms")
    return "".join(parts)


def api_time(ms: int) -> str:
    """``ms`` as Prometheus's API takes a time: Unix seconds with exactly three decimals."""
    return f"{ms // 1000}.{ms % 1000:03d}"


def rfc3339(ms: int) -> str:
    """``ms`` as an RFC 3339 UTC time, with milliseconds only when there are any."""
    stamp = _EPOCH + timedelta(milliseconds=ms)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ms % 1000:03d}Z" if ms % 1000 else "Z")
