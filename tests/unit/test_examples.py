"""Both examples run as real processes with the SDK's console exporters (no collector needed).

The same examples run against the real collector in the stack tests (OTLP endpoint from env).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _objects(text: str) -> list[dict[str, object]]:
    """The JSON objects the console exporters printed one after another."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return objects
        obj, index = decoder.raw_decode(text, index)
        objects.append(obj)


def _run(command: list[str], extra_env: dict[str, str]) -> tuple[str, list[dict[str, object]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SOMA_"))}
    env.update({
        "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console",
        "OTEL_LOGS_EXPORTER": "console", "SOMA_LOG_JSON": "false", "PYTHONPATH": str(ROOT),
    })
    env.update(extra_env)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    return last, _objects(done.stdout)


@pytest.mark.parametrize(
    ("module", "launcher", "env", "mode", "service"),
    [
        ("examples.standalone", [], {}, "standalone", "example-standalone"),
        (
            "examples.instrumented",
            [str(VENV_BIN / "opentelemetry-instrument")],
            {"OTEL_SERVICE_NAME": "example-instrumented",
             "OTEL_RESOURCE_ATTRIBUTES": "service.version=0.1.0,deployment.environment=LOCAL",
             "OTEL_SEMCONV_STABILITY_OPT_IN": "http"},
            "instrumented",
            "example-instrumented",
        ),
    ],
)
def test_example_emits_one_scrubbed_trace_with_its_logs_and_metrics(
    module: str, launcher: list[str], env: dict[str, str], mode: str, service: str
) -> None:
    """The example process exports the three spans of one trace (authorization redacted), each
    log record exactly once with that trace id and the password redacted, and its metrics."""
    last, objects = _run([*launcher, sys.executable, "-m", module], env)
    assert last.startswith(f"mode={mode} trace_id=")
    trace_id = "0x" + last.rsplit("=", 1)[1]

    spans = [o for o in objects if "kind" in o and "context" in o]
    by_name = {str(s["name"]): s for s in spans}
    assert sorted(by_name) == ["chat example-model", "conversation.process", "execute_tool echo"]
    assert {s["context"]["trace_id"] for s in spans} == {trace_id}  # type: ignore[index]
    tool_attrs = by_name["execute_tool echo"]["attributes"]
    assert tool_attrs["http.request.header.authorization"] == "[REDACTED]"  # type: ignore[index]
    assert by_name["chat example-model"]["kind"] == "SpanKind.CLIENT"
    resource = by_name["conversation.process"]["resource"]["attributes"]  # type: ignore[index]
    assert (resource["service.name"], resource["service.version"]) == (service, "0.1.0")
    assert resource["deployment.environment"] == "LOCAL" and "service.namespace" not in resource

    logs = [o for o in objects if "severity_text" in o and o["body"] in
            ("conversation started", "conversation done")]
    assert sorted(str(r["body"]) for r in logs) == ["conversation done", "conversation started"]
    assert {r["trace_id"] for r in logs} == {trace_id}
    (started,) = [r for r in logs if r["body"] == "conversation started"]
    assert started["attributes"] == {"tenant": "acme", "password": "[REDACTED]"}

    metric_names = {
        m["name"]
        for o in objects if "resource_metrics" in o
        for rm in o["resource_metrics"]  # type: ignore[attr-defined]
        for sm in rm["scope_metrics"]
        for m in sm["metrics"]
    }
    assert {"slm_tokens_total", "budget_tokens_consumed_total", "intent_classification_total",
            "resource_usage_cpu_seconds", "resource_usage_memory_bytes",
            "sandbox_active_executions", "soma_scrubbed_values_total"} <= metric_names
