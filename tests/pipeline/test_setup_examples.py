"""Both setup modes of docs/setup.md, run as documented, deliver logs and spans to the stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import live

pytestmark = pytest.mark.usefixtures("stack")
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODES = {
    "standalone": ([str(BIN / "python"), "-m", "examples.standalone"], {}),
    "instrumented": (
        [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), "-m", "examples.instrumented"],
        {
            "OTEL_SERVICE_NAME": "example-instrumented",
            "OTEL_RESOURCE_ATTRIBUTES": "service.version=0.1.0,deployment.environment=LOCAL",
            "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
        },
    ),
}


@pytest.mark.parametrize("mode", MODES)
def test_example_logs_reach_victorialogs_with_its_trace_id_and_scrubbed(mode: str) -> None:
    """The two log records arrive with service, severity and trace id, their secret redacted."""
    argv, extra = MODES[mode]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", **extra}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    trace_id = re.search(rf"mode={mode} trace_id=([0-9a-f]{{32}})", done.stderr)
    assert trace_id, done.stderr
    records = live.wait_until(
        lambda: live.logs_query(f"trace_id:{trace_id[1]}"),
        lambda r: len(r) == 2,
        timeout=30,
        what=f"2 log records of trace {trace_id[1]}",
    )
    assert sorted(r["_msg"] for r in records) == ["conversation done", "conversation started"]
    assert {r["service.name"] for r in records} == {f"example-{mode}"}
    assert {r["severity_text"] for r in records} == {"INFO"}
    assert [r["password"] for r in records if "password" in r] == ["[REDACTED]"]
