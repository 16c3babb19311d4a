"""Senders that are not ours leave no secret in any store, and the collector counts exactly
what it redacted from each of them.

Three senders, each under a new job name, put a canary secret in every place a secret hides:
a key that names a secret, ``url.query``/``url.full`` parameters, an Authorization header
attribute, Bearer text inside a value, a span event, a log body and log attributes, a metric
label:

* a plain OTLP/HTTP JSON post (``/v1/traces``, ``/v1/logs``, ``/v1/metrics``), hand-written;
* telemetrygen (the collector-contrib load generator, Go SDK) over OTLP/gRPC;
* a FastAPI app (tests/package/probe_app.py) in a fresh venv with the OpenTelemetry distro and
  no package of ours, under plain ``opentelemetry-instrument`` with header capture on.

Then the canary is found 0 times in Jaeger, VictoriaLogs, Prometheus and the exporter page, the
kept traces and log records carry ``[REDACTED]`` where the canary was, and
``soma_collector_redacted_values_total{job=<sender>}`` moved by exactly the number of values
each sender put there, per signal and rule. Every trace here has an error span, so the tail
sampler keeps each one (errors policy) and Jaeger can be checked span by span.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.collector import telemetrygen
from otel._scrubbing import REDACTED
from tests import live

pytestmark = pytest.mark.usefixtures("stack")
REPO = Path(__file__).resolve().parents[2]
OTLP_HTTP = "http://127.0.0.1:4318"
PROBE_PORT = 8016
COUNTER = "soma_collector_redacted_values_total"

Counts = dict[tuple[str, str], int]


@dataclass(frozen=True)
class Sent:
    """One sender's job, canary and the redactions it should cause per (signal, rule)."""

    job: str
    canary: str
    expected: Counts


def _redacted(job: str) -> Counts:
    """The collector's redaction counter of ``job`` per (signal, rule), from Prometheus."""
    rows = live.prom_query(f'sum by (signal, rule) ({COUNTER}{{job="{job}"}})')
    return {(r["metric"]["signal"], r["metric"]["rule"]): int(float(r["value"][1]))
            for r in rows}


def _settled_counts(sent: Sent) -> Counts:
    return live.wait_until(lambda: _redacted(sent.job), lambda c: c == sent.expected,
                           timeout=90, what=f"{COUNTER} of {sent.job} = {sent.expected}")


def _stores(sent: Sent) -> dict[str, str]:
    """Everything each store holds for the sender's job, and a search for the canary."""
    return {
        "Jaeger": live.get_text(f"{live.JAEGER}/api/traces?service={sent.job}&lookback=1h"),
        "VictoriaLogs": json.dumps(live.logs_query(f'service.name:"{sent.job}"')),
        "VictoriaLogs search": json.dumps(live.logs_query(f'"{sent.canary}"')),
        "Prometheus": json.dumps(live.prom_query(f'{{job="{sent.job}"}}')),
        "exporter page": live.get_text(live.COLLECTOR_METRICS),
    }


def _assert_nowhere(sent: Sent) -> None:
    stores = _stores(sent)
    assert {name: text.count(sent.canary) for name, text in stores.items()} == dict.fromkeys(
        stores, 0)


def _jaeger_spans(job: str, count: int) -> list[dict[str, object]]:
    def spans() -> list[dict[str, object]]:
        data = live.get_json(f"{live.JAEGER}/api/traces",
                             {"service": job, "lookback": "1h", "limit": "100"})
        return [span for trace in data.get("data") or [] for span in trace["spans"]]
    return live.wait_until(spans, lambda found: len(found) >= count, timeout=90,
                           what=f"{count} spans of {job} in Jaeger")


def _tags(span: dict[str, object]) -> dict[str, object]:
    return {t["key"]: t["value"] for t in span["tags"]}  # type: ignore[attr-defined]


# ----------------------------------------------------------------------- plain OTLP/HTTP JSON

def _json_any(value: object) -> dict[str, object]:
    if isinstance(value, list):
        return {"arrayValue": {"values": [_json_any(v) for v in value]}}
    return {"stringValue": value}


def _json_attrs(attributes: dict[str, object]) -> list[dict[str, object]]:
    return [{"key": k, "value": _json_any(v)} for k, v in attributes.items()]


def _post(path: str, body: dict[str, object]) -> int:
    request = urllib.request.Request(f"{OTLP_HTTP}{path}", data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(resp.status)


@pytest.fixture(scope="module")
def json_sender() -> Sent:
    """Two error spans with an exception event, two log records and one metric data point,
    posted as OTLP/HTTP JSON under a new service name."""
    job, canary = f"json-sender-{uuid.uuid4().hex[:6]}", f"c4n4ry{uuid.uuid4().hex}"
    resource = {"attributes": _json_attrs({"service.name": job})}
    span_attributes = {
        "api_key": canary,                                        # key rule
        "url.query": f"access_token={canary}&page=1",              # query parameter
        "url.full": f"https://shop.example/p?password={canary}",   # URL parameter
        "http.request.header.authorization": [f"Bearer {canary}"],  # header, key rule
        "message": f"called upstream with Bearer {canary}",         # Bearer text
    }
    now = time.time_ns()
    spans = [{
        "traceId": uuid.uuid4().hex, "spanId": uuid.uuid4().hex[:16], "name": "GET /p",
        "kind": 2, "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1_000_000),
        "attributes": _json_attrs(span_attributes), "status": {"code": 2},
        "events": [{"name": "exception", "timeUnixNano": str(now),
                    "attributes": _json_attrs({"exception.message": f"secret={canary}"})}],
    } for _ in range(2)]
    records = [{"timeUnixNano": str(now), "severityNumber": 13, "severityText": "WARN",
                "body": {"stringValue": f"login by Bearer {canary}"},
                "attributes": _json_attrs({"api_key": canary})} for _ in range(2)]
    metric = {"name": "json_sender_requests", "sum": {
        "aggregationTemporality": 2, "isMonotonic": True, "dataPoints": [{
            "asInt": "1", "timeUnixNano": str(now), "startTimeUnixNano": str(now - 1),
            "attributes": _json_attrs({"route": f"/p?token={canary}"})}]}}
    assert _post("/v1/traces", {"resourceSpans": [
        {"resource": resource, "scopeSpans": [{"spans": spans}]}]}) == 200
    assert _post("/v1/logs", {"resourceLogs": [
        {"resource": resource, "scopeLogs": [{"logRecords": records}]}]}) == 200
    assert _post("/v1/metrics", {"resourceMetrics": [
        {"resource": resource, "scopeMetrics": [{"metrics": [metric]}]}]}) == 200
    return Sent(job, canary, {
        ("traces", "api_key"): 2, ("traces", "token"): 2, ("traces", "password"): 2,
        ("traces", "authorization"): 4, ("traces", "secret"): 2,
        ("logs", "authorization"): 2, ("logs", "api_key"): 2,
        ("metrics", "token"): 1,
    })


def test_a_plain_otlp_json_sender_is_redacted_and_counted_exactly(json_sender: Sent) -> None:
    """Every place of the JSON sender's canary is counted once per rule, the kept spans and
    the log records hold the marker, and no store holds the canary."""
    assert _settled_counts(json_sender) == json_sender.expected
    spans = _jaeger_spans(json_sender.job, 2)
    for tags in map(_tags, spans):
        assert tags["api_key"] == REDACTED
        assert tags["url.query"] == f"access_token={REDACTED}&page=1"
        assert tags["url.full"] == f"https://shop.example/p?password={REDACTED}"
        assert tags["message"] == f"called upstream with Bearer {REDACTED}"
        assert "soma.redacted" not in tags
    records = live.wait_until(lambda: live.logs_query(f'service.name:"{json_sender.job}"'),
                              lambda found: len(found) == 2, timeout=60,
                              what=f"the 2 log records of {json_sender.job}")
    assert {(r["_msg"], r["api_key"]) for r in records} == {
        (f"login by Bearer {REDACTED}", REDACTED)}
    assert all("soma.redacted" not in r for r in records)
    _assert_nowhere(json_sender)


# ------------------------------------------------------------------------------- telemetrygen

@pytest.fixture(scope="module")
def telemetrygen_sender() -> Sent:
    """telemetrygen sends 2 error traces of 2 spans, 3 log records and 2 metric points, each
    with the canary under a secret key and in Bearer text."""
    job, canary = f"tg-sender-{uuid.uuid4().hex[:6]}", f"c4n4ry{uuid.uuid4().hex}"
    binary = str(telemetrygen())
    common = ["--otlp-endpoint", "127.0.0.1:4317", "--otlp-insecure", "--service", job,
              "--telemetry-attributes", f'api_key="{canary}"',
              "--telemetry-attributes", f'note="Bearer {canary}"']
    for argv in (["traces", "--traces", "2", "--child-spans", "1", "--status-code", "Error"],
                 ["logs", "--logs", "3", "--body", f"token={canary} used"],
                 ["metrics", "--metrics", "2", "--metric-type", "Sum"]):
        done = subprocess.run([binary, argv[0], *common, *argv[1:]], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
    return Sent(job, canary, {
        ("traces", "api_key"): 4, ("traces", "authorization"): 4,
        ("logs", "api_key"): 3, ("logs", "authorization"): 3, ("logs", "token"): 3,
        ("metrics", "api_key"): 2, ("metrics", "authorization"): 2,
    })


def test_telemetrygen_is_redacted_and_counted_exactly(telemetrygen_sender: Sent) -> None:
    """The Go SDK's spans, logs and metric points lose the canary in every place, each counted
    once per rule, and no store holds it."""
    assert _settled_counts(telemetrygen_sender) == telemetrygen_sender.expected
    for tags in map(_tags, _jaeger_spans(telemetrygen_sender.job, 4)):
        assert (tags["api_key"], tags["note"]) == (REDACTED, f"Bearer {REDACTED}")
    _assert_nowhere(telemetrygen_sender)


# ------------------------------------------------------- an app with the distro, none of ours

@pytest.fixture(scope="module")
def plain_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    """probe_app.py in a fresh venv with opentelemetry-distro and the FastAPI and logging
    instrumentations (no package of ours), under plain opentelemetry-instrument with header
    capture and log export on; three requests to the failing item, each with the canary in
    the query and the Authorization header, each logging it in an extra field and its text."""
    root = tmp_path_factory.mktemp("plain")
    venv = root / "venv"
    subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "opentelemetry-distro",
         "opentelemetry-exporter-otlp-proto-grpc", "opentelemetry-instrumentation-fastapi",
         "opentelemetry-instrumentation-logging", "fastapi", "uvicorn",
         "-c", str(REPO / "requirements.lock")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run([str(venv / "bin" / "pip"), "list"], capture_output=True,
                            text=True, check=True).stdout
    assert "somaagent" not in listed, "the plain app must not have our package"
    shutil.copy(REPO / "tests" / "package" / "probe_app.py", root / "app.py")
    job, canary = f"plain-app-{uuid.uuid4().hex[:6]}", f"c4n4ry{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON"))}
    env |= {
        "OTEL_SERVICE_NAME": job,
        "OTEL_EXPORTER_OTLP_ENDPOINT": live.OTLP_GRPC,
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "authorization",
    }
    out = root / "stdout.log"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [str(venv / "bin" / "opentelemetry-instrument"), str(venv / "bin" / "python"),
             "app.py", str(PROBE_PORT)], cwd=root, env=env, stdout=sink,
            stderr=subprocess.STDOUT)
    try:
        live.wait_until(lambda: live.serving(process, f"http://127.0.0.1:{PROBE_PORT}/healthz"),
                        bool, timeout=60, what=f"the plain app on {PROBE_PORT} (log: {out})")
        for _ in range(3):
            request = urllib.request.Request(
                f"http://127.0.0.1:{PROBE_PORT}/v1/items/0?access_token={canary}",
                headers={"Authorization": f"Bearer {canary}"})
            with pytest.raises(urllib.error.HTTPError) as failed:
                urllib.request.urlopen(request, timeout=10)
            assert failed.value.code == 500
        # Per request: the server span's http.url holds the query (token; http.target is the
        # path alone), its captured header the credential (authorization); the log record's
        # body the Bearer text (authorization) and its extra field the token (api_key).
        yield Sent(job, canary, {
            ("traces", "token"): 3, ("traces", "authorization"): 3,
            ("logs", "authorization"): 3, ("logs", "api_key"): 3,
        })
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_app_without_our_package_is_redacted_and_counted_exactly(plain_app: Sent) -> None:
    """The contrib instrumentation's server spans and the logging handler's records of an app
    that never installed our package lose the canary, each value counted once per rule."""
    assert _settled_counts(plain_app) == plain_app.expected
    servers = [tags for tags in map(_tags, _jaeger_spans(plain_app.job, 3))
               if tags.get("span.kind") == "server"]
    assert len(servers) == 3
    for tags in servers:
        assert tags["http.url"] == (
            f"http://127.0.0.1:{PROBE_PORT}/v1/items/0?access_token={REDACTED}")
        assert tags["http.request.header.authorization"] in (REDACTED, f'["{REDACTED}"]')
    _assert_nowhere(plain_app)


def test_our_own_services_need_no_collector_redaction() -> None:
    """The library scrubbed the reference services' telemetry before it left them: the
    collector redacted nothing of theirs (their values arrive already as the marker)."""
    assert _redacted("gateway") == {}
    assert _redacted("conversation-worker") == {}
    assert _redacted("tool-executor") == {}
