"""Longer suite, with the rules exactly as shipped: a real fault reaches the webhook receiver.

Each test turns on a fault switch of a running service (docs/services.md), drives real traffic
through the gateway until the alert arrives at the local webhook sink through Prometheus and
Alertmanager, and prints the time from the fault to the notification (docs/alerting.md
records the figures). Faults are reset in ``finally``. The ``for:`` durations make these tests
take minutes, so they are marked ``long`` and stay out of CI:

    .venv/bin/pytest -m long -s tests/alerts/test_faults_long.py

The sink is shared with other tests and is never cleared here: a test only counts
notifications for its alert whose ``startsAt`` is after the test began. The fault switches
are per service, not per tenant, so other traffic on the stack sees the fault meanwhile; a
test that finds its switch turned off by someone else turns it on again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from stack.stackctl import control
from tests import live
from tests.services import kit

pytestmark = [pytest.mark.usefixtures("stack"), pytest.mark.long]

AM_ALERTS = f"{live.ALERTMANAGER}/api/v2/alerts"
# An alert still active from an earlier run (or another test) must resolve before a test can
# see a new one; rate windows are 5m, so this allows one window plus resolution.
QUIET_DEADLINE_SECONDS = 480
REPLY_TIMEOUT_SECONDS = 90


def _now() -> datetime:
    return datetime.now(UTC)


def _wait_quiet(alertname: str) -> None:
    """Wait until Prometheus has no pending or firing ``alertname`` (left by earlier traffic)."""
    live.wait_until(
        lambda: live.prom_query(f'ALERTS{{alertname="{alertname}"}}'),
        lambda result: result == [],
        timeout=QUIET_DEADLINE_SECONDS,
        what=f"{alertname} inactive before the test starts",
        interval=5,
    )


def _faults(base: str) -> dict[str, Any]:
    answer: dict[str, Any] = live.get_json(f"{base}/admin/faults")
    return answer


class Conversation:
    """One tenant and session of this test, posting messages and waiting for each reply."""

    def __init__(self) -> None:
        _, self.api_key = kit.create_tenant(rate_limit_per_minute=1000)
        self.session = kit.create_session(self.api_key)

    def exchange(self, text: str) -> dict[str, Any]:
        """Post ``text`` and return the stored reply."""
        posted = kit.post_message(self.api_key, self.session, text)
        return kit.reply_to(self.api_key, self.session, posted["message_id"],
                            timeout=REPLY_TIMEOUT_SECONDS)


def _drive_until_alert(
    alertname: str,
    text: str,
    since: datetime,
    keep_fault_on: Callable[[], None],
    deadline_seconds: float,
    max_messages: int,
) -> tuple[dict[str, Any], float]:
    """Exchange ``text`` messages one after another until ``alertname`` reaches the sink.

    Bounded by ``max_messages`` and ``deadline_seconds``; returns the first notification and
    the seconds from the start of the call (the fault was turned on just before it).
    """
    started = time.monotonic()
    conversation = Conversation()
    sent = 0
    while True:
        keep_fault_on()
        conversation.exchange(text)
        sent += 1
        found = live.sink_firing(alertname, since)
        if found:
            return found[0], time.monotonic() - started
        elapsed = time.monotonic() - started
        assert elapsed < deadline_seconds and sent < max_messages, (
            f"{alertname} did not reach the webhook after {sent} messages in {elapsed:.0f}s"
        )


@pytest.mark.timeout(1200)
def test_tool_failures_fire_high_tool_execution_failures_at_the_webhook() -> None:
    """With half the sandbox runs failing, HighToolExecutionFailures reaches the webhook."""
    _wait_quiet("HighToolExecutionFailures")
    since = _now()

    def keep_fault_on() -> None:
        if _faults(kit.EXECUTOR).get("tool_failure_ratio") != 0.5:
            kit.set_faults(kit.EXECUTOR, tool_failure_ratio=0.5)

    try:
        # for: 3m, after the 5m ratio crosses 10%, plus evaluation, group_wait (30s) and slack.
        alert, elapsed = _drive_until_alert(
            "HighToolExecutionFailures", "calculate 6*7", since, keep_fault_on,
            deadline_seconds=600, max_messages=2000,
        )
    finally:
        kit.set_faults(kit.EXECUTOR, tool_failure_ratio=0.0)
    print(f"time-to-alert HighToolExecutionFailures: {elapsed:.0f}s")
    assert alert["labels"]["severity"] == "warning"
    assert alert["labels"]["service"] == "tool-executor"
    assert alert["labels"]["cluster"] == "somaagent01"
    assert alert["annotations"]["runbook_url"].endswith("#hightoolexecutionfailures")


@pytest.mark.timeout(1200)
def test_slm_slowness_fires_slow_conversation_processing_at_the_webhook() -> None:
    """With every SLM call delayed 6s, SlowConversationProcessing reaches the webhook."""
    _wait_quiet("SlowConversationProcessing")
    since = _now()

    def keep_fault_on() -> None:
        if _faults(kit.WORKER).get("slm_delay_seconds") != 6:
            kit.set_faults(kit.WORKER, slm_delay_seconds=6)

    try:
        # for: 5m, after the 5m p95 crosses 5s, plus evaluation, group_wait (30s) and slack;
        # each message takes over 6s, so the count bound is far from reached.
        alert, elapsed = _drive_until_alert(
            "SlowConversationProcessing", "hello there", since, keep_fault_on,
            deadline_seconds=780, max_messages=300,
        )
    finally:
        kit.set_faults(kit.WORKER, slm_delay_seconds=0)
    print(f"time-to-alert SlowConversationProcessing: {elapsed:.0f}s")
    assert alert["labels"]["severity"] == "warning"
    assert alert["labels"]["service"] == "conversation-worker"
    assert alert["annotations"]["runbook_url"].endswith("#slowconversationprocessing")


def _post_messages(count: int, api_key: str, session: str) -> None:
    """Post ``count`` messages through the gateway without waiting for replies."""
    with httpx.Client(base_url=kit.GATEWAY, headers=kit.auth(api_key), timeout=30) as client:
        for n in range(count):
            answer = client.post(f"/v1/sessions/{session}/messages", json={"text": f"hello {n}"})
            assert answer.status_code == 202, answer.text


def _am_alerts() -> list[dict[str, Any]]:
    """Every alert Alertmanager holds now, including inhibited and silenced ones."""
    alerts: list[dict[str, Any]] = live.get_json(
        AM_ALERTS, {"inhibited": "true", "silenced": "true", "active": "true"}
    )
    return alerts


def _named(alerts: list[dict[str, Any]], alertname: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"]["alertname"] == alertname]


@pytest.fixture
def stuck_worker() -> Iterator[None]:
    """The worker's conversation consumer stuck for the test, always released afterwards."""
    _wait_quiet("HighKafkaConsumerLag")
    kit.set_faults(kit.WORKER, consumer_stuck=True)
    try:
        yield
    finally:
        kit.set_faults(kit.WORKER, consumer_stuck=False)


@pytest.mark.outage
@pytest.mark.timeout(1800)
@pytest.mark.usefixtures("stuck_worker")
def test_consumer_lag_fires_and_is_inhibited_while_kafka_is_down() -> None:
    """A stuck consumer fires HighKafkaConsumerLag; broker stopped: KafkaDown inhibits it."""
    started, since = time.monotonic(), _now()
    # Over-budget messages: once the consumer is released the backlog drains without SLM calls.
    _, api_key = kit.create_tenant(token_budget=0, persona_token_budget=0,
                                   rate_limit_per_minute=5000)
    _post_messages(1200, api_key, kit.create_session(api_key))
    # for: 5m after the lag (collected by the collector's kafkametrics receiver) passes 1000.
    live.wait_until(
        lambda: live.sink_firing("HighKafkaConsumerLag", since),
        lambda alerts: any(a["labels"].get("group") == "conversation-worker" for a in alerts),
        timeout=720,
        what="HighKafkaConsumerLag for group conversation-worker at the webhook",
        interval=5,
    )
    lag_elapsed = time.monotonic() - started
    print(f"time-to-alert HighKafkaConsumerLag: {lag_elapsed:.0f}s")
    stopped, stopped_at = time.monotonic(), _now()

    def kafka_down(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [a for a in _named(alerts, "KafkaDown") if live.alert_started(a) >= stopped_at]

    assert control("stop", ["kafka"]) == 0
    try:
        alerts = live.wait_until(
            _am_alerts,
            lambda alerts: bool(kafka_down(alerts)) and all(
                a["status"]["inhibitedBy"] for a in _named(alerts, "HighKafkaConsumerLag")
            ),
            timeout=300,
            what="KafkaDown firing and HighKafkaConsumerLag inhibited by it",
            interval=2,
        )
        down_elapsed = time.monotonic() - stopped
    finally:
        assert control("start", ["kafka"]) == 0
    print(f"time-to-alert KafkaDown (with lag inhibited): {down_elapsed:.0f}s")
    down = kafka_down(alerts)
    lag = _named(alerts, "HighKafkaConsumerLag")
    assert down[0]["status"]["state"] == "active"
    assert lag, "HighKafkaConsumerLag vanished before KafkaDown fired"
    fingerprints = {a["fingerprint"] for a in down}
    for alert in lag:
        assert alert["status"]["state"] == "suppressed"
        assert set(alert["status"]["inhibitedBy"]) <= fingerprints
    # Kafka is back: the services see it again before the next test.
    live.wait_until(lambda: httpx.get(f"{kit.WORKER}/readyz", timeout=5).status_code,
                    lambda code: code == 200, timeout=180, what="worker ready after Kafka")
