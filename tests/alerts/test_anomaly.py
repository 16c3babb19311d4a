"""Anomaly alerts end to end: a fault switch shifts a consumer group's lag out of its band and
ConsumerLagAnomaly reaches the webhook sink.

The rules of ``infra/prometheus/rules/anomaly.yml`` judge a series against the day that ended an
hour ago (``[1d] offset 1h``) and fire after ``for: 10m``: shown as shipped, a live case would
need a day of steady history and a long wait. So this test runs a second Prometheus of its own
(the Debian ``prometheus`` binary, a free port, a temporary TSDB) that scrapes the same collector
exporter (127.0.0.1:8889, ``honor_labels`` as in ``infra/prometheus/prometheus.yml``), alerts to
the stack's Alertmanager (127.0.0.1:9093), and loads a copy of anomaly.yml in which only the
window durations are shortened (``SHORTENED``): the 5m rate windows to 1m, the day of the
baseline to 2m, its 1h offset to 2m and ``for: 10m`` to 1m. Expressions, thresholds, floors,
the minimum traffic, labels and annotations are unchanged, and
``test_the_live_copy_differs_from_anomaly_yml_only_in_window_durations`` checks that. The
property the windows must keep is kept: the offset covers the rate window plus ``for``
(1h >= 5m + 10m shipped, 2m >= 1m + 1m here), so a shift cannot enter its own baseline before
the alert fires. The copy's alerts carry the external label ``prometheus=anomaly-e2e-<run>``,
so the test tells them from any the stack's Prometheus sends.

The live case: after 210 s the copy has a baseline of the ``conversation-worker`` group's lag on
``conversation.events`` (0 on an idle stack: band [0, 100], the floor) and the test checks the
lag is inside it with no alert; then it sets the worker's ``consumer_stuck`` fault switch (the
conversation consumer stops taking records, docs/services.md) and posts 300 messages through
the gateway for a tenant without token budget (the backlog drains without SLM calls once the
consumer is released), and waits for the notification at the sink, checking on the way that
the alert was pending for the whole ``for`` before it fired. The switch is reset in
``finally``. While it is on, every conversation on the stack waits; 300 messages stay below
HighKafkaConsumerLag's 1000. About 6 minutes, hence ``long``:

    .venv/bin/pytest -p no:cacheprovider -m long -s tests/alerts/test_anomaly.py

The gateway's ``gateway_5xx_ratio`` switch cannot drive ErrorRatioAnomaly here: its 500s are
answered by a middleware before routing, so their server spans have no ``http.route`` and the
collector's ``filter/http`` keeps them out of ``http_requests_total``.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests import live
from tests.rules.conftest import CLUSTER, RULES_DIR, run
from tests.rules.test_retention import seconds
from tests.services import kit

ANOMALY_RULES = RULES_DIR / "anomaly.yml"
#: Shipped window -> live window: range selectors [5m] and [1d], `offset 1h`, `for: 10m`.
SHORTENED = {"5m": "1m", "1d": "2m", "1h": "2m", "10m": "1m"}
_RANGE = re.compile(r"\[(\w+)\]")
_OFFSET = re.compile(r"\boffset (\w+)")

ALERTNAME = "ConsumerLagAnomaly"
GROUP, TOPIC = "conversation-worker", "conversation.events"
LAG_MESSAGES = 300             # three times the band's floor of 100, far below 1000
HEALTHY_SECONDS = 210          # the baseline window [t-4m, t-2m] then holds 80 s of samples
FAULT_DEADLINE_SECONDS = 360   # lag read every 10s, scrape 5s, for 1m, evaluation 15s,
                               # group_wait 30s, slack
QUIET_DEADLINE_SECONDS = 600   # an earlier ConsumerLagAnomaly group in Alertmanager resolving


def _shorten(expr: str) -> str:
    """``expr`` with each range selector and offset replaced by its live duration."""
    expr = _RANGE.sub(lambda m: f"[{SHORTENED[m[1]]}]", expr)
    return _OFFSET.sub(lambda m: f"offset {SHORTENED[m[1]]}", expr)


def shortened_rules(text: str) -> dict[str, Any]:
    """The rule document ``text`` with only its window durations shortened (KeyError on any
    duration SHORTENED does not map, so nothing stays at its shipped length unnoticed)."""
    document: dict[str, Any] = yaml.safe_load(text)
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["expr"] = _shorten(rule["expr"])
            if "for" in rule:
                rule["for"] = SHORTENED[rule["for"]]
    return document


def _durations_blanked(expr: str) -> str:
    """``expr`` with every range selector and offset duration replaced by a placeholder."""
    return _OFFSET.sub("offset D", _RANGE.sub("[D]", expr))


def test_the_live_copy_differs_from_anomaly_yml_only_in_window_durations() -> None:
    """The shortened copy has the same groups, rules, labels and annotations, the same
    expressions up to their durations, and keeps offset >= rate window + for."""
    original = yaml.safe_load(ANOMALY_RULES.read_text())
    copy = shortened_rules(ANOMALY_RULES.read_text())
    assert [g["name"] for g in copy["groups"]] == [g["name"] for g in original["groups"]]
    for group, shipped in zip(copy["groups"], original["groups"], strict=True):
        assert group.get("interval") == shipped.get("interval")
        for rule, ship in zip(group["rules"], shipped["rules"], strict=True):
            assert rule.keys() == ship.keys()
            rest = {k: v for k, v in rule.items() if k not in ("expr", "for")}
            assert rest == {k: v for k, v in ship.items() if k not in ("expr", "for")}
            assert _durations_blanked(rule["expr"]) == _durations_blanked(ship["expr"])
            assert rule.get("for") == (SHORTENED[ship["for"]] if "for" in ship else None)
    for rate, offset, hold in (("5m", "1h", "10m"),
                               (SHORTENED["5m"], SHORTENED["1h"], SHORTENED["10m"])):
        assert seconds(offset) >= seconds(rate) + seconds(hold)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ShortPrometheus:
    """The test's own Prometheus: its address and the external label its alerts carry."""

    url: str
    label: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant query; return the result vector."""
        answer = live.get_json(f"{self.url}/api/v1/query", {"query": expr})
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def alerts(self, alertname: str) -> list[dict[str, Any]]:
        """This Prometheus's pending and firing ``alertname`` alerts for GROUP and TOPIC."""
        answer = live.get_json(f"{self.url}/api/v1/alerts")
        return [a for a in answer["data"]["alerts"] if a["labels"]["alertname"] == alertname
                and a["labels"].get("group") == GROUP and a["labels"].get("topic") == TOPIC]


def _stuck() -> bool:
    """Whether the worker's consumer_stuck switch is on."""
    return bool(live.get_json(f"{kit.WORKER}/admin/faults")["consumer_stuck"])


def _am_alerts(alertname: str) -> list[dict[str, Any]]:
    """Alertmanager's active ``alertname`` alerts, inhibited and silenced ones included."""
    alerts: list[dict[str, Any]] = live.get_json(
        f"{live.ALERTMANAGER}/api/v2/alerts",
        {"active": "true", "inhibited": "true", "silenced": "true"},
    )
    return [a for a in alerts if a["labels"]["alertname"] == alertname]


@pytest.fixture
def short_prometheus(tmp_path: Path) -> Iterator[ShortPrometheus]:
    """A Prometheus on the shortened copy of anomaly.yml, stopped after the test."""
    live.wait_until(_stuck, lambda stuck: not stuck, timeout=300, interval=5,
                    what="the worker's consumer_stuck off (another test may hold it)")
    # An earlier notification group of this alert would delay ours by up to group_interval.
    live.wait_until(lambda: _am_alerts(ALERTNAME), lambda alerts: alerts == [],
                    timeout=QUIET_DEADLINE_SECONDS, interval=5,
                    what=f"no {ALERTNAME} active in Alertmanager")
    rules = tmp_path / "anomaly-short.yml"
    rules.write_text(yaml.safe_dump(shortened_rules(ANOMALY_RULES.read_text()), sort_keys=False))
    label = f"anomaly-e2e-{uuid.uuid4().hex[:8]}"
    config = {
        "global": {
            "scrape_interval": "5s",
            "evaluation_interval": "15s",
            "external_labels": {"cluster": CLUSTER, "environment": "production",
                                "prometheus": label},
        },
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]},
        "rule_files": [str(rules)],
        "scrape_configs": [{
            "job_name": "otel-collector",
            "honor_labels": True,
            "static_configs": [{"targets": ["127.0.0.1:8889"]}],
        }],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    check = run("promtool", "check", "config", tmp_path / "prometheus.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            live.wait_until(lambda: proc.poll() is None and live.get_text(f"{url}/-/ready"),
                            bool, timeout=60, what="the test's Prometheus ready", interval=0.5)
            yield ShortPrometheus(url, label)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _post_messages(count: int) -> None:
    """Post ``count`` messages through the gateway for a tenant without token budget."""
    _, api_key = kit.create_tenant(token_budget=0, persona_token_budget=0,
                                   rate_limit_per_minute=5000)
    session = kit.create_session(api_key)
    with httpx.Client(base_url=kit.GATEWAY, headers=kit.auth(api_key), timeout=30) as client:
        for n in range(count):
            answer = client.post(f"/v1/sessions/{session}/messages", json={"text": f"lag {n}"})
            assert answer.status_code == 202, answer.text


@pytest.mark.long
@pytest.mark.usefixtures("stack")
@pytest.mark.timeout(1800)
def test_stuck_consumer_fires_consumer_lag_anomaly_at_the_webhook(
    short_prometheus: ShortPrometheus,
) -> None:
    """A backlog of 300 against a band of [0, 100] is pending for the whole `for` and then
    reaches the webhook as ConsumerLagAnomaly, with the shortened windows."""
    prom = short_prometheus
    where = f'{{group="{GROUP}",topic="{TOPIC}"}}'
    time.sleep(HEALTHY_SECONDS)  # history for the baseline
    band = live.wait_until(lambda: prom.query(f"group_topic:kafka_consumer_lag:sum_upper{where}"),
                           bool, timeout=90, interval=5,
                           what="the lag band of the worker's group in the test's Prometheus")
    upper = float(band[0]["value"][1])
    before = prom.query(f"group_topic:kafka_consumer_lag:sum{where}")
    assert before and float(before[0]["value"][1]) <= upper, (before, band)
    assert prom.alerts(ALERTNAME) == [], f"{ALERTNAME} active before the fault"

    since = datetime.now(UTC)
    fault_on = time.monotonic()
    pending_seen: float | None = None
    firing: dict[str, Any] | None = None
    firing_seen: float | None = None
    notified: list[dict[str, Any]] = []
    kit.set_faults(kit.WORKER, consumer_stuck=True)
    try:
        _post_messages(LAG_MESSAGES)
        posted = time.monotonic() - fault_on
        while not notified:
            elapsed = time.monotonic() - fault_on
            assert elapsed < FAULT_DEADLINE_SECONDS, (
                f"{ALERTNAME} did not reach the webhook in {elapsed:.0f}s; pending after "
                f"{pending_seen}, firing after {firing_seen}")
            if not _stuck():  # someone else reset it
                kit.set_faults(kit.WORKER, consumer_stuck=True)
            for alert in prom.alerts(ALERTNAME):
                if alert["state"] == "pending" and pending_seen is None:
                    pending_seen = elapsed
                if alert["state"] == "firing" and firing is None:
                    firing, firing_seen = alert, elapsed
            notified = [a for a in live.sink_firing(ALERTNAME, since)
                        if a["labels"].get("prometheus") == prom.label]
            time.sleep(2)
    finally:
        kit.set_faults(kit.WORKER, consumer_stuck=False)
    elapsed = time.monotonic() - fault_on
    print(f"time-to-alert {ALERTNAME} (shortened windows): {elapsed:.0f}s after the switch "
          f"(messages posted by {posted:.0f}s, pending seen at {pending_seen}s, firing at "
          f"{firing_seen}s; band upper {upper:g})")

    assert pending_seen is not None and firing is not None and firing_seen is not None
    assert pending_seen < firing_seen
    # Firing only once the condition has held for the whole `for: 1m` since activeAt.
    active_at = live.alert_started({"startsAt": firing["activeAt"]}).timestamp()
    assert since.timestamp() + firing_seen - active_at >= seconds(SHORTENED["10m"]) - 1
    alert = notified[0]
    assert alert["labels"] == {
        "alertname": ALERTNAME, "group": GROUP, "topic": TOPIC, "service": "kafka",
        "severity": "warning", "direction": "above", "cluster": CLUSTER,
        "environment": "production", "prometheus": prom.label,
    }
    assert float(firing["value"]) > upper
    assert alert["annotations"]["runbook_url"].endswith("#consumerlaganomaly")
    assert f"Consumer group {GROUP} is " in alert["annotations"]["description"]
