"""End to end, with the rules exactly as shipped: a real outage reaches the webhook receiver.

Each test stops a real component through the stack's supervisor, waits for the alert to reach
the local webhook sink through Prometheus and Alertmanager, and starts the component again.
Tests marked ``outage`` run after every other test (tests/conftest.py), because they take a
backend away from the services. Time-to-alert is printed; docs/alerting.md records the figures.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from stack.stackctl import control
from tests import live

pytestmark = [pytest.mark.usefixtures("stack"), pytest.mark.outage]
# for: 1m + one evaluation (15s) + one scrape (15s) + Alertmanager group_wait (30s), with slack.
ALERT_DEADLINE_SECONDS = 300


@pytest.fixture
def sink() -> Iterator[None]:
    """An empty alert sink, so that only this test's notifications are in it."""
    clear = urllib.request.Request(live.ALERT_SINK, method="DELETE")
    urllib.request.urlopen(clear, timeout=10).close()
    yield


def _outage(component: str, alertname: str) -> tuple[dict[str, Any], float]:
    """Stop ``component``, wait for ``alertname`` at the sink, restart; return it and the delay."""
    started = time.monotonic()
    assert control("stop", [component]) == 0
    try:
        alerts = live.wait_until(
            lambda: live.sink_firing(alertname),
            bool,
            timeout=ALERT_DEADLINE_SECONDS,
            what=f"{alertname} at the webhook after stopping {component}",
            interval=2,
        )
        elapsed = time.monotonic() - started
    finally:
        assert control("start", [component]) == 0
    print(f"time-to-alert {alertname}: {elapsed:.0f}s")
    return alerts[0], elapsed


@pytest.mark.usefixtures("sink")
def test_stopping_redis_fires_redis_down_at_the_webhook() -> None:
    """With Redis stopped (its exporter still up), RedisDown reaches the webhook as critical."""
    alert, _ = _outage("redis", "RedisDown")
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["service"] == "redis"
    assert alert["labels"]["cluster"] == "somaagent01"
    assert alert["annotations"]["runbook_url"].endswith("docs/runbook.md#redisdown")


@pytest.mark.usefixtures("sink")
def test_stopping_kafka_fires_kafka_down_and_inhibits_lag_alerts() -> None:
    """With the broker stopped, KafkaDown reaches the webhook and no lag or DLQ alert that
    started during the outage does (one already firing before it may have been sent)."""
    stopped = datetime.now(UTC)
    alert, _ = _outage("kafka", "KafkaDown")
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["service"] == "kafka"
    assert live.sink_firing("HighKafkaConsumerLag", since=stopped) == []
    assert live.sink_firing("DeadLetterQueueEvents", since=stopped) == []
