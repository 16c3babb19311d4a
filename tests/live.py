"""Clients for the live stack's APIs, shared by the tests that run against it.

Every helper talks to the real component on loopback; ``wait_until`` replaces sleeps: it
polls a condition until it holds or its deadline passes, then fails with the last value seen.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"
JAEGER = "http://127.0.0.1:16686"
VICTORIALOGS = "http://127.0.0.1:9428"
COLLECTOR_METRICS = "http://127.0.0.1:8889/metrics"
OTLP_GRPC = "http://127.0.0.1:4317"
KAFKA = "127.0.0.1:9092"
SLM = "http://127.0.0.1:8100"
ALERT_SINK = "http://127.0.0.1:9095/alerts"

T = TypeVar("T")


def get_json(url: str, params: dict[str, str] | None = None, timeout: float = 10) -> Any:
    """GET ``url`` (with query ``params``) and decode its JSON answer."""
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def get_text(url: str, timeout: float = 10) -> str:
    """GET ``url`` and return its body as text."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def post_json(url: str, body: object, timeout: float = 60) -> Any:
    """POST ``body`` as JSON to ``url`` and decode the JSON answer."""
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def serving(process: subprocess.Popen[bytes], health_url: str) -> bool:
    """Whether ``process`` (which must still run) answers ``health_url``; for ``wait_until``."""
    assert process.poll() is None, f"the process behind {health_url} exited"
    try:
        return bool(get_json(health_url, timeout=2))
    except (urllib.error.URLError, ConnectionError):
        return False


def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float,
    what: str,
    interval: float = 0.5,
) -> T:
    """Call ``probe`` until ``done(value)`` or ``timeout`` seconds pass; return the value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
            if done(value):
                return value
            last = repr(value)[:500]
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")
        time.sleep(interval)


def settled(probe: Callable[[], T], quiet: float, timeout: float, what: str) -> T:
    """``probe()`` once two reads ``quiet`` seconds apart agree (counters that stopped moving);
    fails after ``timeout`` seconds like :func:`wait_until`."""
    previous: list[T] = []

    def read() -> tuple[bool, T]:
        current = probe()
        agree = bool(previous) and previous[-1] == current
        previous[:] = [current]
        return agree, current

    return wait_until(read, lambda r: r[0], timeout, what, interval=quiet)[1]


def prom_query(expr: str) -> list[dict[str, Any]]:
    """Run an instant PromQL query; return the result vector."""
    answer = get_json(f"{PROMETHEUS}/api/v1/query", {"query": expr})
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def prom_value(expr: str) -> float | None:
    """The single value of an instant query, or None when the result is empty."""
    result = prom_query(expr)
    assert len(result) <= 1, f"{expr} returned {len(result)} series"
    return float(result[0]["value"][1]) if result else None


def prom_total(expr: str) -> float:
    """The sum of selector ``expr`` over its series scraped in the last 15 s; 0 when none.

    An instant query alone also returns, for 5 minutes, a series' last value from before a
    stack restart; its restarted counter (same labels, from 0) would then hide the growth.
    The collector is scraped every 5 s, so 15 s holds every live series; a test that waits
    15 s for its totals to settle never keeps a stopped collector's series in its baseline.
    """
    return prom_value(f"sum(last_over_time({expr}[15s]))") or 0.0


def jaeger_trace(trace_id: str) -> list[dict[str, Any]]:
    """The spans Jaeger holds for ``trace_id`` (hex), or [] when it has none."""
    try:
        data = get_json(f"{JAEGER}/api/traces/{trace_id}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise
    traces = data.get("data") or []
    return list(traces[0]["spans"]) if traces else []


def logs_query(logsql: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Run a LogsQL query against VictoriaLogs; return the matching log entries."""
    body = get_text(
        f"{VICTORIALOGS}/select/logsql/query?"
        + urllib.parse.urlencode({"query": logsql, "limit": str(limit)})
    )
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def alert_started(alert: dict[str, Any]) -> datetime:
    """An Alertmanager alert's ``startsAt`` (RFC 3339, nanoseconds cut to what Python parses)."""
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", alert["startsAt"]).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp)


def sink_firing(alertname: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """The ``alertname`` alerts the webhook sink received firing (started at or after
    ``since``)."""
    return [
        alert
        for payload in get_json(ALERT_SINK)
        for alert in payload["alerts"]
        if alert["labels"]["alertname"] == alertname
        and alert["status"] == "firing"
        and (since is None or alert_started(alert) >= since)
    ]
