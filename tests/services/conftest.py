"""Fixtures of the service tests: the three services, running for real.

``services`` (session): for each of gateway (8010), conversation worker (8011) and tool
executor (8012), if its ``/readyz`` answers 200 (e.g. the stack's supervisor runs it) the
tests use it; otherwise the fixture starts it as a subprocess under
``opentelemetry-instrument`` with the documented environment, waits until ready, and stops
it (SIGTERM) at the end of the session. Its output goes to ``.stack/logs/test-<name>.log``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests import live

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "gateway": ("services.gateway", 8010),
    "conversation-worker": ("services.conversation_worker", 8011),
    "tool-executor": ("services.tool_executor", 8012),
}


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def service_env(name: str) -> dict[str, str]:
    """The environment a service runs with (as ``docs/services.md`` documents it)."""
    return {
        **os.environ,
        "OTEL_SERVICE_NAME": name,
        "OTEL_RESOURCE_ATTRIBUTES": f"service.version=0.1.0,service.instance.id={name}-test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "healthz,readyz,/stream",
        "SOMA_AGENT_MODE": "LOCAL",
    }


@pytest.fixture(scope="session")
def services(stack: None) -> Iterator[None]:
    """Make sure the three services answer ready; stop the ones this fixture started."""
    started: list[subprocess.Popen[bytes]] = []
    logs = ROOT / ".stack" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    try:
        for name, (module, port) in SERVICES.items():
            if _ready(port):
                continue
            with open(logs / f"test-{name}.log", "ab") as log:
                started.append(subprocess.Popen(
                    [str(bindir / "opentelemetry-instrument"), str(bindir / "python"),
                     "-m", module],
                    cwd=ROOT, env=service_env(name), stdout=log, stderr=subprocess.STDOUT,
                ))
        for name, (_, port) in SERVICES.items():
            live.wait_until(partial(_ready, port), bool, 90, f"{name} ready on {port}")
        yield
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
