"""A new service needs no configuration: OTEL_SERVICE_NAME alone puts it in Prometheus."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import live

pytestmark = pytest.mark.usefixtures("stack")
REPO = Path(__file__).resolve().parents[2]
PORT = 8013  # the seed's router port


CALLS = 'http_requests_total{job="router",method="GET",endpoint="/items/{item_id}",status="200"}'
COUNT = 'http_request_duration_seconds_count{job="router",method="GET",endpoint="/items/{item_id}"}'


def _by_instance(expr: str) -> dict[str, float]:
    return {r["metric"]["instance"]: float(r["value"][1]) for r in live.prom_query(expr)}


@pytest.fixture
def router() -> Iterator[tuple[str, set[str]]]:
    """The app under opentelemetry-instrument with only OTEL_SERVICE_NAME=router set; yields
    its base URL and the router instances Prometheus knew before it started."""
    known = set(_by_instance(CALLS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_SERVICE_NAME"] = "router"
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [
            str(bin_dir / "opentelemetry-instrument"),
            str(bin_dir / "uvicorn"),
            "tests.collector.zero_config_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{PORT}"
    try:
        live.wait_until(
            lambda: live.get_json(f"{base}/healthz"), bool, timeout=30, what="the router app"
        )
        yield base, known
    finally:
        proc.terminate()  # SIGTERM: the SDK flushes on exit
        proc.wait(timeout=30)


def test_service_with_only_a_name_gets_its_red_series_under_its_job(
    router: tuple[str, set[str]],
) -> None:
    """Three requests to a new service appear as job="router" series with exact counts."""
    base, known = router
    for item in (1, 2, 3):
        with urllib.request.urlopen(f"{base}/items/{item}", timeout=10) as resp:
            assert resp.status == 200
    fresh = live.wait_until(
        lambda: {i: v for i, v in _by_instance(CALLS).items() if i not in known},
        lambda new: list(new.values()) == [3.0],
        timeout=60,
        what=f"one new instance with {CALLS} == 3",
    )
    (instance,) = fresh
    live.wait_until(
        lambda: _by_instance(COUNT).get(instance),
        lambda v: v == 3.0,
        timeout=60,
        what=f"{COUNT} == 3 for {instance}",
    )
    (series,) = live.prom_query(f'{CALLS[:-1]},instance="{instance}"}}')
    assert set(series["metric"]) == {"__name__", "job", "instance", "method", "endpoint", "status"}
