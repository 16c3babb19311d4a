"""The package as a new service gets it: build the wheel, install it into a fresh venv outside the
repository, run an app that never imports the library under plain ``opentelemetry-instrument``.

The venv gets the wheel with its ``fastapi`` extra and uvicorn, constrained to
``requirements.lock`` (pip resolves the rest from the index, through its cache). The app
(``probe_app.py``, copied out of the repository) serves three good requests and one failing
one, each with a canary secret in the query string (``access_token``), in the
``Authorization`` header (captured through
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST``) and in a log line's ``extra``
field and text. Its job name is new in every run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import live

pytestmark = pytest.mark.usefixtures("stack")
REPO = Path(__file__).resolve().parents[2]
PORT = 8014
ITEMS = (1, 2, 3, 0)  # item 0 answers 500
ENDPOINT = "/v1/items/{item_id}"


@dataclass(frozen=True)
class Installed:
    """The built wheel and the fresh venv it was installed into."""

    wheel: Path
    venv: Path


@dataclass(frozen=True)
class Probe:
    """The running app: its job name, the canary it was sent and its stdout file."""

    job: str
    canary: str
    stdout: Path
    process: subprocess.Popen[bytes]


def _run(argv: list[str], cwd: Path) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{argv[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from this checkout, installed with its fastapi extra into a new venv."""
    root = tmp_path_factory.mktemp("distro")
    assert REPO not in root.parents, "the venv must live outside the repository"
    # Built from a copy of what the wheel is made of: setuptools writes build/ and egg-info
    # into the source folder, and a stale build/lib would leak deleted modules into the wheel.
    source = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("otel", "services_instrumentation"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root), str(source)],
         root)
    (wheel,) = root.glob("somaagent_observability-*.whl")
    venv = root / "venv"
    _run(["python3.11", "-m", "venv", str(venv)], root)
    _run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(REPO / "requirements.lock"),
          f"{wheel}[fastapi]", "uvicorn"], root)
    return Installed(wheel=wheel, venv=venv)


def test_the_wheel_holds_the_library_its_types_and_its_entry_points(installed: Installed) -> None:
    """The wheel ships otel and services_instrumentation with py.typed and the distro's entry
    points, and none of the stack, bench, services or tests."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entries = wheel.read(entry_points).decode()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"otel", "services_instrumentation"}
    assert {"otel/py.typed", "services_instrumentation/py.typed"} <= set(names)
    for line in ("[opentelemetry_distro]\nsomaagent = otel._distro:SomaDistro",
                 "[opentelemetry_configurator]\nsomaagent = otel._distro:SomaConfigurator",
                 "[opentelemetry_post_instrument]\nsomaagent = otel._distro:post_instrument",
                 "[pytest11]\nsomaagent_otel = otel.testing"):
        assert line in entries


@pytest.fixture(scope="module")
def probe(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    """The probe app running from a folder outside the repository, with only the documented
    variables set; stopped with SIGKILL by the last test, or at the end of the module."""
    workdir = tmp_path_factory.mktemp("probe")
    shutil.copy(Path(__file__).with_name("probe_app.py"), workdir / "app.py")
    job = f"distro-probe-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON"))}
    env |= {
        "OTEL_SERVICE_NAME": job,
        "OTEL_EXPORTER_OTLP_ENDPOINT": live.OTLP_GRPC,
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.0.0",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "authorization",
    }
    stdout = workdir / "stdout.log"
    bin_dir = installed.venv / "bin"
    with open(stdout, "wb") as out:
        process = subprocess.Popen(
            [str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "python"), "app.py",
             str(PORT)],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        live.wait_until(lambda: live.serving(process, f"http://127.0.0.1:{PORT}/healthz"),
                        bool, timeout=60, what=f"the probe app on {PORT} (log: {stdout})")
        yield Probe(job=job, canary=f"canary{uuid.uuid4().hex}", stdout=stdout, process=process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _request(item: int, canary: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/v1/items/{item}?access_token={canary}",
        headers={"Authorization": f"Bearer {canary}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _series(job: str, status: str) -> float | None:
    return live.prom_value(
        f'sum(http_requests_total{{job="{job}",method="GET",endpoint="{ENDPOINT}",'
        f'status="{status}"}})')


def test_a_new_app_gets_red_series_scrubbed_traces_and_logs_with_trace_ids(probe: Probe) -> None:
    """Four requests give exact RED series under the app's job, its kept trace and its log
    lines carry trace ids and redaction marks, and the canary is in no store."""
    assert [_request(item, probe.canary) for item in ITEMS] == [200, 200, 200, 500]

    live.wait_until(lambda: (_series(probe.job, "200"), _series(probe.job, "500")),
                    lambda counts: counts == (3.0, 1.0), timeout=90,
                    what=f"http_requests_total of {probe.job}: 3 x 200 and 1 x 500")
    count = live.prom_value(
        f'sum(http_request_duration_seconds_count{{job="{probe.job}",endpoint="{ENDPOINT}"}})')
    assert count == 4.0

    records = live.wait_until(
        lambda: live.logs_query(f'service.name:"{probe.job}" "served to"'),
        lambda found: len(found) == 4, timeout=60,
        what=f"the 4 log records of {probe.job} in VictoriaLogs")
    assert all(len(r.get("trace_id", "")) == 32 for r in records), records
    failed = [r for r in records if r["_msg"].startswith("item 0 ")]
    assert [r["_msg"] for r in failed] == ["item 0 served to Bearer [REDACTED]"]
    assert {r.get("api_key") for r in records} == {"[REDACTED]"}

    lines = [json.loads(raw) for raw in probe.stdout.read_text().splitlines()
             if raw.startswith("{") and "served to" in raw]
    assert sorted(line["trace_id"] for line in lines) == sorted(r["trace_id"] for r in records)

    spans = live.wait_until(lambda: live.jaeger_trace(failed[0]["trace_id"]), bool, timeout=90,
                            what="the failed request's trace in Jaeger")
    (server,) = [s for s in spans if s["operationName"] == f"GET {ENDPOINT}"]
    tags = {t["key"]: t["value"] for t in server["tags"]}
    assert tags["url.query"] == "access_token=[REDACTED]"
    assert tags["http.request.header.authorization"] in ("[REDACTED]", '["[REDACTED]"]')

    everything = {
        "Jaeger": live.get_text(f"{live.JAEGER}/api/traces?service={probe.job}&lookback=1h"),
        "VictoriaLogs": json.dumps(live.logs_query(f'service.name:"{probe.job}"')),
        "VictoriaLogs search": json.dumps(live.logs_query(f'"{probe.canary}"')),
        "Prometheus": json.dumps(live.prom_query(f'{{job="{probe.job}"}}')),
        "exporter page": live.get_text(live.COLLECTOR_METRICS),
        "stdout": probe.stdout.read_text(),
    }
    assert {store: text.count(probe.canary) for store, text in everything.items()} == dict.fromkeys(
        everything, 0)


@pytest.mark.timeout(600)
def test_killing_the_app_fires_service_telemetry_missing_for_its_job(probe: Probe) -> None:
    """After SIGKILL the app's heartbeat goes stale and the webhook gets ServiceTelemetryMissing
    for its job, with no job list anywhere in the rules."""
    live.wait_until(
        lambda: live.prom_value(
            f'time() - max(soma_telemetry_heartbeat_timestamp_seconds{{job="{probe.job}"}})'),
        lambda age: age is not None and age < 30, timeout=60,
        what=f"a fresh heartbeat of {probe.job}")
    killed = datetime.now(UTC)
    probe.process.send_signal(signal.SIGKILL)
    probe.process.wait(timeout=30)
    started = time.monotonic()
    alerts = live.wait_until(
        lambda: [a for a in live.sink_firing("ServiceTelemetryMissing", since=killed)
                 if a["labels"].get("job") == probe.job],
        bool, timeout=420, what=f"ServiceTelemetryMissing for {probe.job} at the webhook")
    (alert,) = alerts
    assert alert["labels"]["service"] == probe.job
    # 2m of silence, 1m pending, then Alertmanager's group_wait: never sooner than 3 minutes.
    assert time.monotonic() - started > 150


def test_the_newest_releases_inside_the_ranges_give_the_same_setup(
    installed: Installed, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Installed without the lock (pip takes the newest release inside every declared range),
    the probe app still gets JSON logs with trace ids and a scrubbed span, with no warning that a
    lean module fell back."""
    root = tmp_path_factory.mktemp("newest")
    venv = root / "venv"
    _run(["python3.11", "-m", "venv", str(venv)], root)
    _run([str(venv / "bin" / "pip"), "install", "-q", f"{installed.wheel}[fastapi]", "uvicorn"],
         root)
    shutil.copy(Path(__file__).with_name("probe_app.py"), root / "app.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON"))}
    env |= {"OTEL_SERVICE_NAME": "distro-newest", "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.0.0"}
    port = PORT + 1
    out = root / "stdout.log"
    with open(out, "wb") as sink:
        process = subprocess.Popen(
            [str(venv / "bin" / "opentelemetry-instrument"), str(venv / "bin" / "python"),
             "app.py", str(port)], cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT)
    canary = f"canary{uuid.uuid4().hex}"
    try:
        live.wait_until(lambda: live.serving(process, f"http://127.0.0.1:{port}/healthz"),
                        bool, timeout=60, what=f"the probe app on {port} (log: {out})")
        url = f"http://127.0.0.1:{port}/v1/items/7?access_token={canary}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
        # Uvicorn re-raises SIGTERM after its shutdown, so the SDK's exit-time flush never
        # runs: wait for the batch processor's own export (every 200 ms here).
        text = live.wait_until(out.read_text, lambda t: '"url.query"' in t, timeout=30,
                               what=f"the console span export in {out}")
    finally:
        process.terminate()
        process.wait(timeout=30)
    (line,) = [json.loads(raw) for raw in text.splitlines()
               if raw.startswith("{") and "served to" in raw]
    assert len(line["trace_id"]) == 32 and line["api_key"] == "[REDACTED]"
    assert '"url.query": "access_token=[REDACTED]"' in text
    assert canary not in text
    assert "module disabled" not in text

