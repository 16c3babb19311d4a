"""Authenticated OTLP: collector-config/auth.yaml on top of config.yaml, on a real collector.

A second otelcol-soma (the stack's binary and flags, ``stack/components.py``) runs with
config.yaml, auth.yaml and a third overlay written here that moves every port and points the
Jaeger, VictoriaLogs and Kafka clients at closed ports, so the stack's collector is untouched
and the stack need not run. The senders are the SDK's and the library's OTLP span exporters
(gRPC and HTTP), a process under ``opentelemetry-instrument`` (the distro) and a standalone
``otel.configure()`` process, each given the token only through ``OTEL_EXPORTER_OTLP_HEADERS``
(or ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``). Every verdict is checked on both sides: the
sender's result and error, and the collector's own counters on its telemetry port.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as OTLPHttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel._otlp
from stack.components import components
from stack.stackctl import stack_paths
from tests import live
from tests.collector.moved import moved_ports

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "collector-config" / "config.yaml"
AUTH = REPO / "collector-config" / "auth.yaml"
AUTHENTICATOR = "bearertokenauth/otlp"
TRACE_METHOD = "opentelemetry.proto.collector.trace.v1.TraceService/Export"
#: What the collector answers a request without the header, and one with any other value.
MISSING = "missing or empty authorization header: Authorization"
MISMATCH = "provided authorization does not match expected scheme or token"
#: A fresh token per run, so a leftover process or file can never make a case pass.
TOKEN = f"soma-{secrets.token_hex(16)}"
PROBE_SPANS = 3


def _stack_collector() -> list[str]:
    """The stack's collector command: binary, flags (feature gates) and --config config.yaml."""
    (collector,) = [c for c in components(stack_paths()) if c.name == "otel-collector"]
    assert collector.command[-2:] == ["--config", str(CONFIG)], collector.command
    return list(collector.command)


def _ports_overlay(path: Path) -> dict[str, int]:
    """Write an overlay moving every port of config.yaml to free ones; returns the ports."""
    overlay, ports = moved_ports()
    path.write_text(yaml.safe_dump(overlay))
    return ports


def _start(root: Path, token_file: Path) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    """Start the collector with config.yaml + auth.yaml + a ports overlay under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    ports = _ports_overlay(root / "ports.yaml")
    log = root / "collector.log"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SOMA_STACK_DATA": str(root / "data"),
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['closed']}",
        "SOMA_OTLP_TOKEN_FILE": str(token_file),
    }
    argv = [*_stack_collector(), "--config", str(AUTH), "--config", str(root / "ports.yaml")]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    return process, ports, log


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class AuthCollector:
    """A running collector with auth.yaml: its ports and its token file."""

    ports: dict[str, int]
    token_file: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def grpc_endpoint(self) -> str:
        """The OTLP/gRPC endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT takes it."""
        return f"http://127.0.0.1:{self.ports['grpc']}"

    @property
    def http_endpoint(self) -> str:
        """The OTLP/HTTP base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it."""
        return f"http://127.0.0.1:{self.ports['http']}"

    def counts(self) -> dict[str, float]:
        """One scrape of the collector's own metrics: spans accepted and requests refused for
        lack of a valid token, by transport (refused: every OTLP service, not only traces)."""
        assert self.process.poll() is None, f"the collector exited; see {self.log}"
        text = live.get_text(f"http://127.0.0.1:{self.ports['telemetry']}/metrics")
        counts = dict.fromkeys(
            ("accepted grpc", "accepted http", "refused grpc", "refused grpc traces",
             "refused http"), 0.0)
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, labels, value = match[1], dict(_LABEL.findall(match[2] or "")), float(match[3])
            if name == "otelcol_receiver_accepted_spans" and labels.get("receiver") == "otlp":
                counts[f"accepted {labels['transport']}"] += value
            elif (name == "rpc_server_call_duration_count"
                  and labels.get("rpc_response_status_code") == "UNAUTHENTICATED"):
                counts["refused grpc"] += value
                if labels.get("rpc_method") == TRACE_METHOD:
                    counts["refused grpc traces"] += value
            elif (name == "http_server_request_duration_count"
                  and labels.get("http_response_status_code") == "401"
                  and labels.get("server_port") == str(self.ports["http"])):
                counts["refused http"] += value
        return counts

    def expect(self, before: dict[str, float], **changes: float) -> None:
        """Wait until every count moved from ``before`` by exactly ``changes`` (names with
        ``_`` for spaces), the others by nothing."""
        wanted = {key: before[key] + changes.get(key.replace(" ", "_"), 0.0) for key in before}
        live.wait_until(self.counts, lambda now: now == wanted, timeout=15,
                        what=f"collector counts {wanted}")


def _serving(collector: AuthCollector) -> bool:
    if collector.process.poll() is not None:
        tail = collector.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"the collector exited with {collector.process.returncode}:\n{tail}")
    return live.serving(collector.process, f"http://127.0.0.1:{collector.ports['health']}/")


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthCollector]:
    """A collector with config.yaml + auth.yaml on free ports, accepting TOKEN."""
    root = tmp_path_factory.mktemp("auth")
    token_file = root / "otlp.token"
    token_file.write_text(f"{TOKEN}  # the only accepted token\n")
    process, ports, log = _start(root, token_file)
    running = AuthCollector(ports, token_file, process, log)
    try:
        live.wait_until(lambda: _serving(running), bool, timeout=60, what="the auth collector")
        yield running
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def spans() -> tuple[ReadableSpan, ...]:
    """PROBE_SPANS ended spans of one provider."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for n in range(PROBE_SPANS):
        provider.get_tracer("auth-probe").start_span(f"probe-{n}").end()
    provider.shutdown()
    return memory.get_finished_spans()


# ------------------------------------------------------------------------ the config itself


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _run_binary(command: str, *configs: Path, env: dict[str, str],
                ) -> subprocess.CompletedProcess[str]:
    binary, *flags = _stack_collector()[:-2]
    argv = [binary, command, *flags]
    for config in configs:
        argv += ["--config", str(config)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


def _env(tmp_path: Path, token_file: Path | None) -> dict[str, str]:
    env = {"SOMA_STACK_DATA": str(tmp_path)}
    if token_file is not None:
        env["SOMA_OTLP_TOKEN_FILE"] = str(token_file)
    return env


def test_shipped_config_is_open_on_loopback_only() -> None:
    """config.yaml alone (the local default) has no authenticator and binds OTLP to 127.0.0.1."""
    protocols = _load(CONFIG)["receivers"]["otlp"]["protocols"]
    for protocol in ("grpc", "http"):
        assert "auth" not in protocols[protocol]
        assert protocols[protocol]["endpoint"].startswith("127.0.0.1:")


def test_overlay_lists_every_extension_of_the_shipped_config() -> None:
    """auth.yaml's service.extensions (which replaces config.yaml's list) keeps all of
    config.yaml's extensions and adds the authenticator."""
    shipped = _load(CONFIG)["service"]["extensions"]
    overlay = _load(AUTH)["service"]["extensions"]
    assert set(shipped) <= set(overlay)
    assert AUTHENTICATOR in overlay


def test_overlay_loads_on_top_of_the_shipped_config(tmp_path: Path) -> None:
    """`otelcol-soma validate` accepts config.yaml + auth.yaml with a token file set."""
    done = _run_binary("validate", CONFIG, AUTH, env=_env(tmp_path, tmp_path / "token"))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("key", ["wait_for_token_file", "authenticator"])
def test_overlay_with_an_unknown_key_fails_validation_naming_it(tmp_path: Path, key: str) -> None:
    """A misspelt key of the overlay (extension or receiver side) fails validation by name."""
    broken = tmp_path / "auth.yaml"
    misspelt = key.replace("_", "") + "x"
    broken.write_text(AUTH.read_text().replace(f"{key}:", f"{misspelt}:", 1))
    done = _run_binary("validate", CONFIG, broken, env=_env(tmp_path, tmp_path / "token"))
    assert done.returncode != 0
    assert misspelt in done.stderr


def test_overlay_without_a_token_file_does_not_load(tmp_path: Path) -> None:
    """Without SOMA_OTLP_TOKEN_FILE the merged config is invalid: auth cannot be on and open."""
    done = _run_binary("validate", CONFIG, AUTH, env=_env(tmp_path, None))
    assert done.returncode != 0
    assert "no bearer token provided" in done.stderr


def test_merged_config_keeps_the_shipped_extensions_and_guards_both_receivers(
    tmp_path: Path,
) -> None:
    """The binary's own merge (print-config) replaces the extension list with auth.yaml's:
    config.yaml's extensions plus the authenticator, on the gRPC and HTTP receivers."""
    done = _run_binary("print-config", CONFIG, AUTH, env=_env(tmp_path, tmp_path / "token"))
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)
    assert merged["service"]["extensions"] == [
        *_load(CONFIG)["service"]["extensions"], AUTHENTICATOR]
    for protocol in ("grpc", "http"):
        auth = merged["receivers"]["otlp"]["protocols"][protocol]["auth"]
        assert auth["authenticator"] == AUTHENTICATOR


@pytest.mark.parametrize("content", [None, ""], ids=["missing", "empty"])
def test_collector_does_not_start_without_a_readable_token_file(
    tmp_path: Path, content: str | None,
) -> None:
    """A missing or empty token file stops the start-up with an error naming the file."""
    token_file = tmp_path / "otlp.token"
    if content is not None:
        token_file.write_text(content)
    process, _, log = _start(tmp_path / "collector", token_file)
    try:
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            _stop(process)
    assert returncode != 0
    assert f'failed to read credentials file "{token_file}"' in log.read_text()


# ----------------------------------------------------------- senders: the exporters in-process

Factory = Callable[[AuthCollector, MeterProvider], SpanExporter]
EXPORTERS: dict[str, tuple[str, Factory]] = {
    "sdk-grpc": ("grpc", lambda c, mp: OTLPSpanExporter(
        endpoint=c.grpc_endpoint, insecure=True, meter_provider=mp)),
    "sdk-http": ("http", lambda c, mp: OTLPHttpSpanExporter(
        endpoint=f"{c.http_endpoint}/v1/traces", meter_provider=mp)),
    "library-grpc": ("grpc", lambda c, mp: otel._otlp.SpanExporter(
        endpoint=c.grpc_endpoint, insecure=True, meter_provider=mp)),
    "library-http": ("http", lambda c, mp: otel._otlp.HttpSpanExporter(
        endpoint=f"{c.http_endpoint}/v1/traces", meter_provider=mp)),
}
_HEADER_VARIABLES = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")


def _export(
    kind: str, collector: AuthCollector, spans: tuple[ReadableSpan, ...],
    monkeypatch: pytest.MonkeyPatch, variable: str | None, value: str | None,
) -> tuple[SpanExportResult, object]:
    """Export ``spans`` with exporter ``kind`` built while only ``variable=value`` carries
    headers; returns the result and the status (gRPC code name or HTTP status) the exporter
    recorded in its own metrics (None on success)."""
    for name in _HEADER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if variable is not None and value is not None:
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    reader = InMemoryMetricReader()
    exporter = EXPORTERS[kind][1](collector, MeterProvider(metric_readers=[reader]))
    try:
        result = exporter.export(spans)
    finally:
        exporter.shutdown()
    data = reader.get_metrics_data()
    assert data is not None
    (point,) = [p for rm in data.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics if m.name == "otel.sdk.exporter.operation.duration"
                for p in m.data.data_points]
    attributes = dict(point.attributes or {})
    status = attributes.get("rpc.response.status_code", attributes.get("http.response.status_code"))
    return result, status


@pytest.mark.parametrize(("variable", "value"), [
    ("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{TOKEN}"),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"Authorization=Bearer {TOKEN}"),
], ids=["generic-variable", "traces-variable"])
@pytest.mark.parametrize("kind", EXPORTERS)
def test_right_token_from_the_environment_is_accepted_and_counted(
    collector: AuthCollector, spans: tuple[ReadableSpan, ...], monkeypatch: pytest.MonkeyPatch,
    kind: str, variable: str, value: str,
) -> None:
    """An exporter given the token only through the standard header variable succeeds, and
    the collector counts its spans as accepted and nothing as refused."""
    transport = EXPORTERS[kind][0]
    before = collector.counts()
    result, status = _export(kind, collector, spans, monkeypatch, variable, value)
    assert (result, status) == (SpanExportResult.SUCCESS, None)
    collector.expect(before, **{f"accepted_{transport}": PROBE_SPANS})


#: Header values the collector must refuse (None: no header at all).
REFUSED = {
    "missing": None,
    "wrong-token": "authorization=Bearer%20not-the-token",
    "no-scheme": f"authorization={TOKEN}",
    "other-scheme": f"authorization=Basic%20{TOKEN}",
    "lower-case-scheme": f"authorization=bearer%20{TOKEN}",  # exact match: "Bearer " only
}


@pytest.mark.parametrize("case", REFUSED)
@pytest.mark.parametrize("kind", EXPORTERS)
def test_refused_sender_gets_unauthenticated_or_401_and_is_counted(
    collector: AuthCollector, spans: tuple[ReadableSpan, ...], monkeypatch: pytest.MonkeyPatch,
    kind: str, case: str,
) -> None:
    """A missing, wrong or malformed token fails the export with gRPC UNAUTHENTICATED or HTTP
    401 (as the exporter records it), after one attempt; the collector counts one refusal and
    accepts nothing."""
    transport = EXPORTERS[kind][0]
    before = collector.counts()
    result, status = _export(kind, collector, spans, monkeypatch,
                             "OTEL_EXPORTER_OTLP_HEADERS", REFUSED[case])
    assert result is SpanExportResult.FAILURE
    assert status == ("UNAUTHENTICATED" if transport == "grpc" else 401)
    changes = {f"refused_{transport}": 1}
    if transport == "grpc":
        changes["refused_grpc_traces"] = 1
    collector.expect(before, **changes)


@pytest.mark.parametrize(("metadata", "message"), [
    ((), MISSING), ((("authorization", "Bearer not-the-token"),), MISMATCH),
], ids=["missing", "wrong-token"])
def test_refused_grpc_sender_sees_unauthenticated_with_the_reason(
    collector: AuthCollector, metadata: tuple[tuple[str, str], ...], message: str,
) -> None:
    """A raw gRPC Export without or with a wrong token ends UNAUTHENTICATED, its details
    saying which."""
    request = ExportTraceServiceRequest().SerializeToString()
    with grpc.insecure_channel(f"127.0.0.1:{collector.ports['grpc']}") as channel:
        export = channel.unary_unary(f"/{TRACE_METHOD}")
        with pytest.raises(grpc.RpcError) as refused:
            export(request, metadata=metadata, timeout=10)
    error: Any = refused.value
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, message)


@pytest.mark.parametrize(("headers", "message"), [
    ({}, MISSING), ({"Authorization": "Bearer not-the-token"}, MISMATCH),
], ids=["missing", "wrong-token"])
def test_refused_http_sender_sees_401_with_the_reason(
    collector: AuthCollector, headers: dict[str, str], message: str,
) -> None:
    """A raw OTLP/HTTP POST without or with a wrong token gets 401 and an OTLP status body
    (code 16, UNAUTHENTICATED) saying which."""
    request = urllib.request.Request(
        f"{collector.http_endpoint}/v1/traces", data=b"{}", method="POST",
        headers={"Content-Type": "application/json", **headers})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    assert json.loads(refused.value.read()) == {"code": 16, "message": message}


def test_rewritten_token_file_takes_effect_without_a_restart(
    collector: AuthCollector, spans: tuple[ReadableSpan, ...], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replacing the token file (written in place, then renamed over) switches the accepted
    token in the running collector; the old one is refused."""
    rotated = f"soma-{secrets.token_hex(16)}"

    def accepts(token: str) -> bool:
        result, _ = _export("library-http", collector, spans, monkeypatch,
                            "OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{token}")
        return result is SpanExportResult.SUCCESS

    try:
        collector.token_file.write_text(f"{rotated}\n")
        live.wait_until(lambda: accepts(rotated), bool, timeout=15, what="the new token accepted")
        assert not accepts(TOKEN)
    finally:
        staged = collector.token_file.with_suffix(".new")
        staged.write_text(f"{TOKEN}\n")
        staged.replace(collector.token_file)
        live.wait_until(lambda: accepts(TOKEN), bool, timeout=15, what="the token restored")
    assert not accepts(rotated)


# ------------------------------------------------------ senders: whole processes (distro, lib)

_APP = f"""
from opentelemetry import trace
tracer = trace.get_tracer("auth-probe")
for n in range({PROBE_SPANS}):
    with tracer.start_as_current_span(f"probe-{{n}}"):
        pass
"""
_STANDALONE_APP = f"""
import otel
telemetry = otel.configure(service_name="auth-probe")
{_APP}
telemetry.shutdown()
"""


def _run_service(collector: AuthCollector, how: str, headers: str | None,
                 ) -> subprocess.CompletedProcess[str]:
    """Run a three-span app as a service would run: ``distro-grpc`` / ``distro-http`` under
    opentelemetry-instrument, ``standalone`` calling otel.configure(); OTLP settings from the
    environment only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_SERVICE_NAME"] = "auth-probe"
    if how == "distro-http":
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.http_endpoint
    else:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.grpc_endpoint
    if headers is not None:
        env["OTEL_EXPORTER_OTLP_HEADERS"] = headers
    bin_dir = Path(sys.executable).parent
    if how == "standalone":
        argv = [sys.executable, "-c", _STANDALONE_APP]
    else:
        argv = [str(bin_dir / "opentelemetry-instrument"), sys.executable, "-c", _APP]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.mark.parametrize("how", ["distro-grpc", "distro-http", "standalone"])
def test_service_sends_the_token_from_otel_exporter_otlp_headers(
    collector: AuthCollector, how: str,
) -> None:
    """A service under opentelemetry-instrument (gRPC or HTTP) or calling otel.configure()
    sends the token from OTEL_EXPORTER_OTLP_HEADERS: its spans are accepted and none of its
    exports (spans, metrics, logs) is refused."""
    transport = "http" if how == "distro-http" else "grpc"
    before = collector.counts()
    _run_service(collector, how, f"authorization=Bearer%20{TOKEN}")
    collector.expect(before, **{f"accepted_{transport}": PROBE_SPANS})


def test_service_without_the_token_is_refused_and_counted(collector: AuthCollector) -> None:
    """A service under opentelemetry-instrument without the header has its span batch
    refused (one UNAUTHENTICATED trace export, counted) and none accepted."""
    before = collector.counts()
    _run_service(collector, "distro-grpc", None)
    now = live.wait_until(
        collector.counts, lambda c: c["refused grpc traces"] == before["refused grpc traces"] + 1,
        timeout=15, what="one refused trace export")
    assert (now["accepted grpc"], now["accepted http"]) == (
        before["accepted grpc"], before["accepted http"])
