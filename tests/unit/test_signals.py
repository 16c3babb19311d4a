"""SIGTERM flushes telemetry (otel._signals): a stopped service keeps its last spans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import live

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROBE = REPO / "tests" / "package" / "probe_app.py"
PORT = 8016


def _serve_one_request_then_sigterm(tmp_path: Path, extra_env: dict[str, str]) -> tuple[int, str]:
    """Run the probe app under opentelemetry-instrument with console span export and a batch
    delay of a minute, send one request, SIGTERM it at once; its exit status and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON"))}
    env |= {"OTEL_SERVICE_NAME": "sigterm-probe", "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "60000", **extra_env}
    out = tmp_path / "stdout.log"
    with open(out, "wb") as sink:
        process = subprocess.Popen(
            [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), str(PROBE), str(PORT)],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        live.wait_until(lambda: live.serving(process, f"http://127.0.0.1:{PORT}/healthz"),
                        bool, timeout=60, what=f"the probe app on {PORT} (log: {out})")
        url = f"http://127.0.0.1:{PORT}/v1/items/5?access_token=s3cret"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=60), out.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_without_the_library_sigterm_loses_the_spans_still_batched(tmp_path: Path) -> None:
    """The premise: under the contrib alone, uvicorn re-raises SIGTERM and the SDK's exit-time
    flush never runs, so the request's span is never exported."""
    status, output = _serve_one_request_then_sigterm(
        tmp_path, {"OTEL_PYTHON_DISTRO": "none", "OTEL_PYTHON_CONFIGURATOR": "somaagent"})
    assert status == -signal.SIGTERM
    assert '"name": "GET /v1/items/{item_id}"' not in output


def test_under_the_distro_sigterm_flushes_the_request_span_and_still_ends_the_process(
    tmp_path: Path,
) -> None:
    """With the package's distro the span is exported (scrubbed) before the process ends by
    SIGTERM, with the same exit status."""
    status, output = _serve_one_request_then_sigterm(tmp_path, {})
    assert status == -signal.SIGTERM
    assert '"name": "GET /v1/items/{item_id}"' in output
    assert '"url.query": "access_token=[REDACTED]"' in output


@pytest.mark.usefixtures("fresh_otel")
def test_an_application_handler_is_left_alone() -> None:
    """install() does nothing where the process already handles SIGTERM itself."""
    from otel import _signals

    def own(signum: int, frame: object) -> None:
        """The application's own handler."""

    previous = signal.signal(signal.SIGTERM, own)
    try:
        assert _signals.install(lambda: None) is False
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)
