"""The collector redacts like the library: same rules, same results, exact counts.

The redaction processors in collector-config/config.yaml are rendered from
otel/redaction_rules.toml, the file the library's scrubbing loads. These tests run the real
``otelcol-soma`` with those processors (copied from config.yaml, not re-typed) between an
OTLP/HTTP receiver and an OTLP/HTTP exporter that posts to a receiver in this test, send hand
built OTLP protobuf (a sender without the library), and compare every value and every count
with what :func:`otel._scrubbing.scrub_value` makes of the same input.
"""

from __future__ import annotations

import math
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from otel._scrubbing import REDACTED, Redactions, scrub_value
from stack.components import COLLECTOR_FEATURE_GATES
from stack.stackctl import stack_paths
from tests import live

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "collector-config" / "config.yaml"
RENDER = REPO / "collector-config" / "render_redaction.py"
RECEIVER_PORT, SINK_PORT, HEALTH_PORT = 14418, 14419, 14433

#: (key, value) of one attribute each; values as the OTLP sender puts them.
CASES: list[tuple[str, object]] = [
    ("http.request.header.authorization", ["Bearer c4n4ryV4lue"]),
    ("url.query", "access_token=c4n4ry&page=2"),
    ("url.full", "https://h.example/p?api_key=c4n4ry&password=hunter2&x=1"),
    ("message", "login with Bearer c4n4ryV4lue done"),
    ("message", "Authorization: Bearer c4n4ryV4lue"),
    ("message", "Authorization: Bearer [REDACTED]"),
    ("message", "basic auth Basic dXNlcjpwYXNz and token: abc123"),
    ("message", "secret_token=abc (secret counts it, not token)"),
    ("message", "X-Auth-Token: zzzz9999; cookie=sess1; private_key=k"),
    ("message", "credentials=a,b session-id: 42 passphrase=xyz"),
    ("message", "nothing to see: max_tokens=7 tokens=3 https://h/p"),
    ("gen_ai.usage.input_tokens", 512),
    ("max_tokens", "7"),
    ("db.password", 123),
    ("api_key", REDACTED),
    ("session_id", "s-1"),
    ("Cookie", "a=b"),
    ("client_secret", True),
    ("token", ""),
    ("ratio", 0.5),
    ("not_a_number", math.nan),
    ("raw", b"\x00\xffBearer abcdefgh"),
    ("empty", ""),
    ("unicode", "Bearer ünïcødé-c4n4ry but Bearer abcd1234"),
    ("long", "x=" + "a" * 20_000 + " password=p4ss"),
]


def _any(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[_kv(k, v) for k, v in value.items()]))
    assert isinstance(value, str)
    return AnyValue(string_value=value)


def _kv(key: str, value: object) -> KeyValue:
    return KeyValue(key=key, value=_any(value))


def _py(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_py(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _py(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(kvs: Any) -> dict[str, object]:
    return {kv.key: _py(kv.value) for kv in kvs}


@dataclass
class Sink:
    """What the collector exported to this test, by OTLP path."""

    received: dict[str, list[bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, path: str) -> list[bytes]:
        with self.lock:
            return list(self.received.get(path, []))


def _serve(sink: Sink) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with sink.lock:
                sink.received.setdefault(self.path, []).append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", SINK_PORT), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _config() -> dict[str, Any]:
    """config.yaml's redaction processors between a test receiver and the test's sink."""
    shipped = yaml.safe_load(CONFIG.read_text())
    processors = {name: spec for name, spec in shipped["processors"].items()
                  if name.startswith("transform/redact_")}
    pipeline = {"receivers": ["otlp"], "exporters": ["otlp_http"]}
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{RECEIVER_PORT}"}}}},
        "processors": processors,
        "exporters": {"otlp_http": {
            "endpoint": f"http://127.0.0.1:{SINK_PORT}", "compression": "none",
            "sending_queue": {"enabled": False}, "retry_on_failure": {"enabled": False}}},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{HEALTH_PORT}"}},
        "service": {
            "extensions": ["health_check"],
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {
                "traces": {**pipeline, "processors": ["transform/redact_traces"]},
                "logs": {**pipeline, "processors": ["transform/redact_logs"]},
                "metrics": {**pipeline, "processors": ["transform/redact_metrics"]},
            },
        },
    }


@dataclass(frozen=True)
class Redactor:
    """A running collector with the shipped redaction processors, and what it exported."""

    sink: Sink

    def post(self, path: str, body: bytes) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{RECEIVER_PORT}{path}", data=body, method="POST",
            headers={"Content-Type": "application/x-protobuf"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


@pytest.fixture(scope="module")
def redactor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redactor]:
    """otelcol-soma with the shipped redaction processors on test ports."""
    workdir = tmp_path_factory.mktemp("redactor")
    (workdir / "config.yaml").write_text(yaml.safe_dump(_config(), sort_keys=False))
    sink = Sink()
    server = _serve(sink)
    log = workdir / "collector.log"
    binary = stack_paths().cached("otelcol/*/otelcol-soma")
    with log.open("wb") as out:
        proc = subprocess.Popen([str(binary), COLLECTOR_FEATURE_GATES, "--config",
                                 str(workdir / "config.yaml")], stdout=out, stderr=out)
    try:
        live.wait_until(lambda: live.serving(proc, f"http://127.0.0.1:{HEALTH_PORT}/"), bool,
                        timeout=60, what=f"the redaction test collector (log: {log})")
        yield Redactor(sink)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.shutdown()


def _expected(key: str, value: object) -> tuple[object, dict[str, int]]:
    """What the library makes of one attribute: its value and the rules it counted."""
    redactions = Redactions()
    scrubbed = scrub_value(value, redactions, key)
    if isinstance(value, list) and not isinstance(scrubbed, str):
        scrubbed = list(scrubbed)  # type: ignore[call-overload]
    return scrubbed, redactions.counts


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _spans(sink: Sink, marker: str) -> dict[str, dict[str, object]]:
    """Exported span attributes by span name, for the spans whose name starts with marker."""
    found: dict[str, dict[str, object]] = {}
    for body in sink.bodies("/v1/traces"):
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if span.name.startswith(marker):
                        found[span.name] = {
                            **_attributes(span.attributes),
                            "events": [_attributes(e.attributes) for e in span.events],
                            "resource": _attributes(rs.resource.attributes)}
    return found


def _trace_request(marker: str, attributes: list[list[KeyValue]],
                   events: list[KeyValue] | None = None,
                   resource: list[KeyValue] | None = None) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "redaction-probe"), *(resource or [])])
    scope = rs.scope_spans.add()
    for i, kvs in enumerate(attributes):
        span = scope.spans.add(trace_id=uuid.uuid4().bytes, span_id=uuid.uuid4().bytes[:8],
                               name=f"{marker}-{i}", start_time_unix_nano=1,
                               end_time_unix_nano=2)
        span.attributes.extend(kvs)
        if events:
            span.events.add(name="exception", time_unix_nano=1).attributes.extend(events)
    return request.SerializeToString()


def test_the_generated_collector_blocks_match_the_shared_rule_file() -> None:
    """config.yaml's generated redaction blocks are exactly what the rule file renders."""
    done = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(RENDER), "--check"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_every_attribute_is_redacted_and_counted_as_the_library_does(redactor: Redactor) -> None:
    """Each case, sent as a span attribute by a plain OTLP sender, leaves the collector with the
    library's value and the library's count per rule, and every span arrives."""
    marker = f"case-{uuid.uuid4().hex[:8]}"
    status = redactor.post("/v1/traces", _trace_request(marker, [[_kv(k, v)] for k, v in CASES]))
    assert status == 200
    spans = live.wait_until(lambda: _spans(redactor.sink, marker),
                            lambda found: len(found) == len(CASES), timeout=30,
                            what=f"the {len(CASES)} case spans at the sink")
    for i, (key, value) in enumerate(CASES):
        attributes = spans[f"{marker}-{i}"]
        want_value, want_counts = _expected(key, value)
        counts = attributes.pop("soma.redacted", {})
        assert _same(attributes[key], want_value), (key, value, attributes[key])
        assert counts == want_counts, (key, value)


def test_span_events_and_resource_attributes_are_redacted_too(redactor: Redactor) -> None:
    """An exception event's message and a resource attribute lose their secrets; the event's
    redactions are counted on its span, the resource's are not counted."""
    marker = f"event-{uuid.uuid4().hex[:8]}"
    events = [_kv("exception.message", "connect failed: password=hunter2"),
              _kv("exception.stacktrace", "at login token=abcd1234 failed")]
    body = _trace_request(marker, [[_kv("ok", "fine")]], events=events,
                          resource=[_kv("deploy.api_key", "k-123")])
    assert redactor.post("/v1/traces", body) == 200
    (span,) = live.wait_until(lambda: list(_spans(redactor.sink, marker).values()), bool,
                              timeout=30, what="the event span at the sink")
    assert span["events"] == [{"exception.message": f"connect failed: password={REDACTED}",
                               "exception.stacktrace": f"at login token={REDACTED} failed"}]
    assert span["resource"]["deploy.api_key"] == REDACTED
    assert span["soma.redacted"] == {"password": 1, "token": 1}


def test_a_sender_cannot_forge_the_redaction_counts(redactor: Redactor) -> None:
    """Attributes named like the counters are dropped on arrival, so a sender's own
    soma.redacted never reaches the counter."""
    marker = f"forged-{uuid.uuid4().hex[:8]}"
    forged = [_kv("soma.redacted", {"token": 1000}), _kv("soma.redaction.rule", "token"),
              _kv("soma.redaction.signal", "traces")]
    assert redactor.post("/v1/traces", _trace_request(marker, [forged])) == 200
    (span,) = live.wait_until(lambda: list(_spans(redactor.sink, marker).values()), bool,
                              timeout=30, what="the forged span at the sink")
    assert {k: v for k, v in span.items() if k not in ("events", "resource")} == {}


def _logs(sink: Sink, marker: str) -> list[tuple[object, dict[str, object]]]:
    found = []
    for body in sink.bodies("/v1/logs"):
        for rl in ExportLogsServiceRequest.FromString(body).resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    attributes = _attributes(record.attributes)
                    if attributes.get("case") == marker:
                        found.append((_py(record.body), attributes))
    return found


def test_log_bodies_and_attributes_are_redacted_and_counted(redactor: Redactor) -> None:
    """A string body, a map body and an extra-style attribute lose their secrets, counted on
    the record."""
    marker = f"log-{uuid.uuid4().hex[:8]}"
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    scope.log_records.add(body=_any("user bob sent Bearer abcdefgh1234"),
                          attributes=[_kv("case", marker), _kv("api_key", "k-1")])
    scope.log_records.add(body=_any({"password": "p", "url": "/x?token=t0k3n", "n": 3}),
                          attributes=[_kv("case", marker)])
    assert redactor.post("/v1/logs", request.SerializeToString()) == 200
    records = live.wait_until(lambda: _logs(redactor.sink, marker), lambda r: len(r) == 2,
                              timeout=30, what="the two log records at the sink")
    by_body = {str(body): attributes for body, attributes in records}
    assert by_body[f"user bob sent Bearer {REDACTED}"]["soma.redacted"] == {
        "authorization": 1, "api_key": 1}
    assert by_body[f"user bob sent Bearer {REDACTED}"]["api_key"] == REDACTED
    (map_body,) = [body for body, _ in records if isinstance(body, dict)]
    assert map_body == {"password": REDACTED, "url": f"/x?token={REDACTED}", "n": 3}
    assert by_body[str(map_body)]["soma.redacted"] == {"password": 1, "token": 1}


def test_metric_data_point_attributes_are_redacted_and_counted(redactor: Redactor) -> None:
    """A data point label holding a secret keeps its series but not the secret."""
    marker = f"metric-{uuid.uuid4().hex[:8]}"
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name=marker)
    metric.gauge.data_points.add(as_int=1, time_unix_nano=1,
                                 attributes=[_kv("route", "/a?session_id=s3ss"),
                                             _kv("authorization", "Basic dXNlcjpwYXNz")])
    assert redactor.post("/v1/metrics", request.SerializeToString()) == 200

    def points() -> list[dict[str, object]]:
        return [_attributes(dp.attributes)
                for body in redactor.sink.bodies("/v1/metrics")
                for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics
                for sm in rm.scope_metrics for m in sm.metrics if m.name == marker
                for dp in m.gauge.data_points]

    (point,) = live.wait_until(points, bool, timeout=30, what="the data point at the sink")
    assert point == {"route": f"/a?session_id={REDACTED}", "authorization": REDACTED,
                     "soma.redacted": {"session_id": 1, "authorization": 1}}
