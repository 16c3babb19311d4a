"""Prometheus's HTTP API as the report reads it: instant and range queries, rules, targets.

Values stay as the API writes them (``"0.9951"``, ``"NaN"``): the report prints the float,
and keeps the text so a reader (or a test) can compare a re-run query with it exactly.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reports._http import SourceError, get_json
from reports._period import api_time

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value as the API wrote it."""

    labels: dict[str, str]
    raw: str

    @property
    def value(self) -> float:
        """The value as a float (NaN and infinities included)."""
        return float(self.raw)


@dataclass(frozen=True)
class Series:
    """One series of a range query: labels and (Unix ms, value text) points."""

    labels: dict[str, str]
    points: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Rule:
    """A rule as ``/api/v1/rules`` lists it, with its group's evaluation interval."""

    kind: str  # "recording" or "alerting"
    name: str
    query: str
    labels: dict[str, str]
    for_seconds: float
    group: str
    interval_seconds: float


@dataclass(frozen=True)
class Readiness:
    """Whether every rule group and scrape target has run after a given time."""

    settled: bool
    behind: tuple[str, ...]


def finite_or_none(raw: str) -> float | None:
    """The float of ``raw``, or None for NaN and infinities (which JSON cannot hold)."""
    value = float(raw)
    return value if math.isfinite(value) else None


def api_timestamp_ms(text: str) -> int:
    """An RFC 3339 time of the API (nanoseconds allowed) as Unix milliseconds."""
    stamp = datetime.fromisoformat(_FRACTION.sub(r"\1", text).replace("Z", "+00:00"))
    return (stamp - _EPOCH) // timedelta(milliseconds=1)


def _ms(ts: float) -> int:
    """A timestamp of the API (seconds, at most three decimals) as Unix milliseconds."""
    return round(ts * 1000)


class Prometheus:
    """A Prometheus server's HTTP API at ``base``."""

    def __init__(self, base: str, *, timeout: float = 60) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str]) -> Any:
        answer = get_json(
            source="Prometheus", base=self.base, path=path, params=params, timeout=self.timeout
        )
        if not isinstance(answer, dict) or answer.get("status") != "success":
            raise SourceError(f"Prometheus at {self.base} answered {path} with {answer!r:.500}")
        return answer["data"]

    def query(self, promql: str, *, at_ms: int) -> list[Sample]:
        """Evaluate ``promql`` at ``at_ms``; return the vector (a scalar as one unlabelled
        sample)."""
        data = self._get("/api/v1/query", {"query": promql, "time": api_time(at_ms)})
        if data["resultType"] == "scalar":
            return [Sample(labels={}, raw=str(data["result"][1]))]
        if data["resultType"] != "vector":
            raise SourceError(f"{promql} gave a {data['resultType']}, not an instant vector")
        return [
            Sample(labels=dict(item["metric"]), raw=str(item["value"][1]))
            for item in data["result"]
        ]

    def query_range(
        self, promql: str, *, start_ms: int, end_ms: int, step_ms: int
    ) -> list[Series]:
        """Evaluate ``promql`` at ``start_ms``, ``start_ms + step_ms``, ... up to ``end_ms``."""
        params = {
            "query": promql,
            "start": api_time(start_ms),
            "end": api_time(end_ms),
            "step": api_time(step_ms),
        }
        data = self._get("/api/v1/query_range", params)
        return [
            Series(
                labels=dict(item["metric"]),
                points=tuple((_ms(float(ts)), str(raw)) for ts, raw in item["values"]),
            )
            for item in data["result"]
        ]

    def rules(self) -> list[Rule]:
        """Every recording and alerting rule Prometheus has loaded."""
        return [
            Rule(
                kind=str(rule["type"]),
                name=str(rule["name"]),
                query=str(rule["query"]),
                labels=dict(rule.get("labels") or {}),
                for_seconds=float(rule.get("duration") or 0),
                group=str(group["name"]),
                interval_seconds=float(group["interval"]),
            )
            for group in self._get("/api/v1/rules", {})["groups"]
            for rule in group["rules"]
        ]

    def version(self) -> str:
        """The server's version (``/api/v1/status/buildinfo``)."""
        return str(self._get("/api/v1/status/buildinfo", {}).get("version", "unknown"))

    def readiness(self, *, after_ms: int) -> Readiness:
        """Whether every rule group has evaluated, and every active target been scraped, after
        ``after_ms``: only then are all samples up to it stored, so a query at ``after_ms``
        gives the same answer now and later."""
        behind: list[str] = []
        for group in self._get("/api/v1/rules", {})["groups"]:
            last = api_timestamp_ms(str(group.get("lastEvaluation") or "0001-01-01T00:00:00Z"))
            if last <= after_ms:
                behind.append(f"rule group {group['name']}")
        for target in self._get("/api/v1/targets", {"state": "active"})["activeTargets"]:
            last = api_timestamp_ms(str(target.get("lastScrape") or "0001-01-01T00:00:00Z"))
            if last <= after_ms:
                behind.append(f"target {target.get('scrapeUrl', '?')}")
        return Readiness(settled=not behind, behind=tuple(behind))

    def wait_settled(self, *, after_ms: int, timeout_s: float) -> Readiness:
        """Poll :meth:`readiness` once a second until settled or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.readiness(after_ms=after_ms)
            if state.settled or time.monotonic() >= deadline:
                return state
            time.sleep(1)
