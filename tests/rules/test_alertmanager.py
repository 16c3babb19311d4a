"""Alertmanager: configuration check, each alert's route, inhibition, and the render step."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import live

from .conftest import CLUSTER, PROMETHEUS_DIR, Rule, load_rules, run

CONFIG = PROMETHEUS_DIR / "alertmanager.yml"
RENDER = PROMETHEUS_DIR / "render_alertmanager.py"
EXPECTED_RECEIVERS = {
    "critical": "local-webhook,page",
    "warning": "local-webhook,ticket",
    "none": "local-webhook",
}


def test_alertmanager_config_passes_amtool_check() -> None:
    """`amtool check-config` accepts alertmanager.yml."""
    result = run("amtool", "check-config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


def _route_labels(alert: Rule) -> list[str]:
    """The labels an alert reaches Alertmanager with, as amtool label=value arguments."""
    labels = {"alertname": alert.name, **alert.body["labels"]}
    labels.setdefault("service", "gateway")  # ServiceTelemetryMissing takes it from the series
    return [f"{k}={v}" for k, v in labels.items()]


@pytest.mark.parametrize(
    "alert", load_rules("alert"), ids=lambda a: f"{a.name}-{a.body['labels']['severity']}"
)
def test_each_alert_reaches_the_sink_and_its_severity_receiver(alert: Rule) -> None:
    """`amtool config routes test` sends each alert to the sink plus page/ticket by severity."""
    expected = EXPECTED_RECEIVERS[alert.body["labels"]["severity"]]
    result = run(
        "amtool", "config", "routes", "test", f"--config.file={CONFIG}",
        f"--verify.receivers={expected}", *_route_labels(alert),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _api(base: str, path: str, body: Any = None) -> Any:
    """GET (or POST body as JSON to) the Alertmanager v2 API and return the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text else None


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A throwaway Alertmanager on alertmanager.yml, its sink pointed at a closed port."""
    config = yaml.safe_load(CONFIG.read_text())
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = f"http://127.0.0.1:{_free_port()}/alerts"
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = subprocess.Popen(
        [
            "prometheus-alertmanager", f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        live.wait_until(lambda: live.get_text(base + "/-/ready"), bool, timeout=20,
                        what="the throwaway Alertmanager ready", interval=0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_inhibition_on_a_running_alertmanager(alertmanager: str) -> None:
    """KafkaDown silences lag and DLQ alerts, a page silences its ticket, nothing else is muted."""
    now = datetime.now(UTC)
    window = {"startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}
    common = {"cluster": CLUSTER}
    sent = {
        "kafka-down": {"alertname": "KafkaDown", "severity": "critical", "service": "kafka"},
        "lag": {"alertname": "HighKafkaConsumerLag", "severity": "critical", "service": "kafka",
                "group": "conversation-worker"},
        "dlq": {"alertname": "DeadLetterQueueEvents", "severity": "warning", "service": "dlq",
                "source_topic": "tool.requests"},
        "burn-page": {"alertname": "GatewayAvailabilityBudgetBurn", "severity": "critical",
                      "service": "gateway", "slo": "gateway-availability"},
        "burn-ticket": {"alertname": "GatewayAvailabilityBudgetBurn", "severity": "warning",
                        "service": "gateway", "slo": "gateway-availability"},
        "other-warning": {"alertname": "HighGatewayLatency", "severity": "warning",
                          "service": "gateway", "job": "gateway"},
    }
    _api(alertmanager, "/api/v2/alerts",
         [{"labels": {**labels, **common}, **window} for labels in sent.values()])
    expected = {key: key in {"lag", "dlq", "burn-ticket"} for key in sent}
    live.wait_until(
        lambda: {
            key: bool(a["status"]["inhibitedBy"])
            for a in _api(alertmanager, "/api/v2/alerts")
            for key, labels in sent.items()
            if a["labels"] == {**labels, **common}
        },
        lambda got: got == expected,
        timeout=15,
        what=f"inhibition state {expected}",
    )


def _render(tmp_path: Path, secrets: dict[str, str]) -> dict[str, Any]:
    """Run the render step with only the given secrets set; check and return its output."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PAGERDUTY_ROUTING_KEY", "OPSGENIE_API_KEY")}
    result = subprocess.run(
        [sys.executable, str(RENDER), str(tmp_path)], env={**env, **secrets},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    check = run("amtool", "check-config", tmp_path / "alertmanager.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    rendered: dict[str, Any] = yaml.safe_load((tmp_path / "alertmanager.yml").read_text())
    return rendered


def test_render_without_secrets_keeps_the_local_configuration(tmp_path: Path) -> None:
    """With no secret set (or an empty one) the rendered configuration equals alertmanager.yml."""
    rendered = _render(tmp_path, {"PAGERDUTY_ROUTING_KEY": ""})
    assert rendered == yaml.safe_load(CONFIG.read_text())
    assert not (tmp_path / "secrets").exists()


def test_render_with_secrets_adds_pagerduty_and_opsgenie_through_key_files(tmp_path: Path) -> None:
    """Set secrets add PagerDuty to page and Opsgenie to page (P1) and ticket (P3), via files."""
    rendered = _render(tmp_path, {"PAGERDUTY_ROUTING_KEY": "pd-key", "OPSGENIE_API_KEY": "og-key"})
    receivers = {r["name"]: r for r in rendered["receivers"]}
    pd_file = Path(receivers["page"]["pagerduty_configs"][0]["routing_key_file"])
    og_file = Path(receivers["page"]["opsgenie_configs"][0]["api_key_file"])
    assert pd_file.read_text() == "pd-key" and og_file.read_text() == "og-key"
    assert pd_file.stat().st_mode & 0o077 == 0 and og_file.stat().st_mode & 0o077 == 0
    assert receivers["page"]["opsgenie_configs"][0]["priority"] == "P1"
    assert receivers["ticket"]["opsgenie_configs"] == [
        {"api_key_file": str(og_file), "priority": "P3", "send_resolved": True}
    ]
    assert "pd-key" not in (tmp_path / "alertmanager.yml").read_text()
    assert rendered["route"] == yaml.safe_load(CONFIG.read_text())["route"]
