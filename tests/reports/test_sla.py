"""The SLA report (``python -m reports.sla``) on the live stack and on bad input.

A known workload goes through the real gateway: plain messages, tool calls of which some fail
(``calculate 1/0``: ``tool_error``, a bad event of tool-execution-success) and messages of a
tenant whose token budget is spent (``budget_exhausted``: a bad event of conversation-success).
No fault switch is needed for those, so other tests sharing the services see no injected
failures. The report is then run as a command for a period that holds the workload, and every
number it writes is checked against Prometheus and Jaeger by this module's own queries: each
figure's PromQL evaluated at the figure's time gives exactly the value the report wrote (the
API's text, compared as text), range queries give exactly its points, and every trace link
resolves in Jaeger's API.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from reports._period import rfc3339
from tests import live
from tests.services import kit

REPO = Path(__file__).resolve().parents[2]
SLO_RULES = REPO / "infra" / "prometheus" / "rules" / "slo.yml"
TOOL_ERRORS, TOOL_OK, PLAIN, REFUSED = 4, 2, 3, 2
TRACES_LISTED = 20  # --traces: error traces listed per service
ZIPKIN = "http://127.0.0.1:9411"  # the trace UI the report links to
REPORT_TIMEOUT_S = 420  # the report waits up to 150 s for Prometheus to run past the period


@dataclass(frozen=True)
class Run:
    """One report run on the workload: its JSON, its HTML and the workload's traces."""

    data: dict[str, Any]
    html: str
    failed_traces: tuple[str, ...]


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m reports.sla`` with ``args`` from the repository's root."""
    return subprocess.run(
        [sys.executable, "-m", "reports.sla", *args], cwd=REPO, capture_output=True, text=True,
        timeout=REPORT_TIMEOUT_S,
    )


def _instant(promql: str, at: str) -> str | None:
    """The value text of ``promql`` at ``at`` (one series at most), or None when empty."""
    answer = live.get_json(f"{live.PROMETHEUS}/api/v1/query", {"query": promql, "time": at})
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    assert len(result) <= 1, f"{promql} returned {len(result)} series"
    return str(result[0]["value"][1]) if result else None


def _range(query: dict[str, Any]) -> list[dict[str, Any]]:
    """The series of the range query ``query`` as sla.json records it."""
    params = {k: str(query[k]) for k in ("start", "end", "step")} | {"query": query["promql"]}
    answer = live.get_json(f"{live.PROMETHEUS}/api/v1/query_range", params)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def _ms(seconds: str | float) -> int:
    return round(float(seconds) * 1000)


def _slo_names() -> set[str]:
    """The SLOs ``infra/prometheus/rules/slo.yml`` defines (labels of its budget records)."""
    groups = yaml.safe_load(SLO_RULES.read_text())["groups"]
    return {
        rule["labels"]["slo"]
        for group in groups
        for rule in group["rules"]
        if rule.get("record") == "slo:error_budget:ratio"
    }


def _whole_second_now() -> int:
    return int(time.time()) * 1000


def _gateway(method: str, path: str, key: str, body: object | None = None) -> httpx.Response:
    """Call the gateway's ``/v1`` API, again while another test's ``gateway_5xx_ratio``
    switch answers 500 ``injected_fault`` (the request was then not handled); 2 minutes at
    most."""
    answer: httpx.Response = live.wait_until(
        lambda: httpx.request(method, f"{kit.GATEWAY}{path}", json=body, headers=kit.auth(key),
                              timeout=30),
        lambda r: not (r.status_code == 500 and "injected_fault" in r.text),
        timeout=120, what=f"{method} {path} without an injected fault", interval=1,
    )
    return answer


def _session(key: str) -> str:
    answer = _gateway("POST", "/v1/sessions", key, {})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["session_id"])


def _post(key: str, session: str, text: str) -> dict[str, str]:
    answer = _gateway("POST", f"/v1/sessions/{session}/messages", key, {"text": text})
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def _replied(key: str, session: str) -> set[str]:
    """The message ids of ``session`` that have their stored reply (none on an error)."""
    answer = httpx.get(f"{kit.GATEWAY}/v1/sessions/{session}/messages", headers=kit.auth(key),
                       timeout=30)
    if answer.status_code != 200:
        return set()
    return {m["reply_to"] for m in answer.json()["messages"] if m["reply_to"]}


def _replies(key: str, session: str, message_ids: list[str]) -> None:
    live.wait_until(lambda: _replied(key, session), lambda got: set(message_ids) <= got,
                    timeout=180, what=f"the replies to {len(message_ids)} messages", interval=1)


def _series_present(expr: str) -> bool:
    return bool(live.prom_query(f"last_over_time({expr}[15s])"))


@pytest.fixture(scope="module")
def run(services: None, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Drive the workload, run the report over a period that holds it, load what it wrote."""
    tool_failures = 'tool_execution_total{job="tool-executor",status="failure"}'
    refusals = 'conversation_errors_total{job="conversation-worker",error_type="budget_exhausted"}'
    _, key = kit.create_tenant(rate_limit_per_minute=1000)
    _, frugal = kit.create_tenant(rate_limit_per_minute=1000, token_budget=1,
                                  persona_token_budget=1)
    session, frugal_session = _session(key), _session(frugal)
    # Before the period: one failure of each kind, so that both counter series exist and
    # rate() sees the workload's first failures (a series' first sample has no increase).
    _replies(key, session, [_post(key, session, "calculate 1/0")["message_id"]])
    _replies(frugal, frugal_session,
             [_post(frugal, frugal_session, "hello")["message_id"]])
    _replies(frugal, frugal_session,
             [_post(frugal, frugal_session, "hello again")["message_id"]])
    live.wait_until(lambda: _series_present(tool_failures) and _series_present(refusals),
                    bool, timeout=120, what="the failure series in Prometheus", interval=2)
    baseline = live.prom_total(tool_failures)
    # The period starts 5 minutes before the workload (one rate window: the warm-up is in it).
    start_ms = _whole_second_now() - 300_000

    sent = [_post(key, session, f"hello number {i}") for i in range(PLAIN)]
    ok = [_post(key, session, "calculate 6*7") for _ in range(TOOL_OK)]
    failing = [_post(key, session, "calculate 1/0") for _ in range(TOOL_ERRORS)]
    refused = [_post(frugal, frugal_session, f"more {i}") for i in range(REFUSED)]
    _replies(key, session, [m["message_id"] for m in [*sent, *ok, *failing]])
    _replies(frugal, frugal_session, [m["message_id"] for m in refused])

    live.wait_until(lambda: live.prom_total(tool_failures), lambda v: v >= baseline + TOOL_ERRORS,
                    timeout=120, what="the workload's tool failures in Prometheus", interval=2)
    seen = time.time()
    live.wait_until(
        lambda: live.prom_value(
            'timestamp(slo:sli_bad_events:rate5m{slo="tool-execution-success"})') or 0.0,
        lambda t: t > seen, timeout=120, what="an SLO evaluation after the failures", interval=2,
    )
    failed_traces = tuple(str(m["trace_id"]) for m in failing)
    live.wait_until(lambda: live.jaeger_trace(failed_traces[-1]), bool, timeout=120,
                    what="a failed tool trace in Jaeger", interval=2)
    end_ms = _whole_second_now()

    out = tmp_path_factory.mktemp("sla")
    done = _report("--from", rfc3339(start_ms), "--to", rfc3339(end_ms), "--out", str(out),
                   "--traces", str(TRACES_LISTED))
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((out / "sla.json").read_text())
    assert data["settled"], data["not_settled"]
    return Run(data=data, html=(out / "sla.html").read_text(), failed_traces=failed_traces)


def _slo_figures(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every instant figure of the SLO section, named ``slo/figure``, head slices included."""
    figures: list[tuple[str, dict[str, Any]]] = []
    for row in data["slos"]:
        figures += [(f"{row['slo']}/{name}", f) for name, f in row["figures"].items()]
        figures += [(f"{row['slo']}/head_{name}", f)
                    for name, f in row["burn_down"]["head_slice"].items()]
    return figures


@pytest.mark.timeout(900)
def test_the_report_covers_every_slo_of_the_rules(run: Run) -> None:
    """sla.json has one row per SLO of slo.yml, evaluated at the period's end."""
    assert {row["slo"] for row in run.data["slos"]} == _slo_names()
    assert run.data["evaluated_at"] == run.data["period"]["end"]


@pytest.mark.timeout(900)
def test_every_slo_figure_equals_its_promql_evaluated_at_its_time(run: Run) -> None:
    """Each SLO figure's PromQL, run by the test at the figure's time, gives its exact value."""
    checked = 0
    for name, figure in _slo_figures(run.data):
        assert figure["time"] == run.data["period"]["end"] or "head" in name
        assert _instant(figure["promql"], figure["time"]) == figure["raw"], name
        checked += 1
    assert checked == len(run.data["slos"]) * 11


@pytest.mark.timeout(900)
def test_slo_figures_follow_the_documented_formulas(run: Run) -> None:
    """attainment = 1 - error ratio, burned = ratio / budget, left = 1 - burned, exactly."""
    for row in run.data["slos"]:
        f = {name: fig["value"] for name, fig in row["figures"].items()}
        if f["error_ratio"] is None:
            continue
        assert f["attainment"] == 1 - f["error_ratio"], row["slo"]
        assert f["objective"] == 1 - f["budget"], row["slo"]
        assert f["budget_burned"] == f["error_ratio"] / f["budget"], row["slo"]
        assert f["budget_left"] == 1 - f["budget_burned"], row["slo"]
        assert math.isclose(f["bad_events"] / f["events"], f["error_ratio"], rel_tol=1e-12)
        assert row["met"] == (f["attainment"] >= f["objective"])


@pytest.mark.timeout(900)
def test_the_workload_failures_count_against_the_tool_and_conversation_slos(run: Run) -> None:
    """The failed tools and refused conversations are bad events; the gateway saw traffic."""
    rows = {row["slo"]: row["figures"] for row in run.data["slos"]}
    for slo in ("tool-execution-success", "conversation-success"):
        assert rows[slo]["bad_events"]["value"] > 0, slo
        assert rows[slo]["attainment"]["value"] < 1, slo
        assert rows[slo]["budget_burned"]["value"] > 0, slo
    assert rows["gateway-availability"]["events"]["value"] > 0


@pytest.mark.timeout(900)
def test_burn_down_slices_equal_their_range_queries_and_add_up_to_the_period(run: Run) -> None:
    """The slices re-run give the same points; the curve ends at the period's budget left."""
    for row in run.data["slos"]:
        burn = row["burn_down"]
        rerun: dict[str, list[list[Any]]] = {}
        for part in ("bad_slices", "event_slices"):
            series = _range(burn[part])
            assert len(series) <= 1
            rerun[part] = series[0]["values"] if series else []
            assert [[_ms(t), v] for t, v in rerun[part]] == \
                [[_ms(t), v] for t, v in burn[part]["values"]], (row["slo"], part)
        head = burn["head_slice"]
        budget = row["figures"]["budget"]["value"]
        total = (head["events"]["value"] or 0.0) + sum(float(v) for _, v in rerun["event_slices"])
        if not budget or total <= 0:
            assert burn["points"] == []
            continue
        spent, expected = 0.0, [[run.data["period"]["start"], 1.0]]
        for t, v in [(head["bad"]["time"], head["bad"]["value"] or 0.0),
                     *((t, float(v)) for t, v in rerun["bad_slices"])]:
            spent += v
            expected.append([t, 1 - spent / total / budget])
        assert [[_ms(t), v] for t, v in burn["points"]] == [[_ms(t), v] for t, v in expected]
        assert math.isclose(burn["points"][-1][1], row["figures"]["budget_left"]["value"],
                            rel_tol=1e-9, abs_tol=1e-12), row["slo"]


@pytest.mark.timeout(900)
def test_alert_figures_equal_their_promql_and_episodes_their_range_query(run: Run) -> None:
    """Firing counts and times re-run equal; each episode is a maximal run of firing points."""
    alerts = run.data["alerts"]
    step = _ms(alerts["resolution_seconds"])
    firing = {
        tuple(sorted((k, v) for k, v in s["metric"].items()
                     if k not in ("__name__", "alertstate"))): {_ms(t) for t, _ in s["values"]}
        for s in _range(alerts["episodes_query"])
    }
    since = {
        tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")):
            {_ms(t): v for t, v in s["values"]}
        for s in _range(alerts["active_since_query"])
    }
    assert {tuple(sorted(a["labels"].items())) for a in alerts["series"]} >= set(firing)
    names = set()
    for alert in alerts["series"]:
        key = tuple(sorted(alert["labels"].items()))
        names.add(alert["labels"]["alertname"])
        for name, figure in alert["figures"].items():
            assert _instant(figure["promql"], figure["time"]) == figure["raw"], (key, name)
        points = firing.get(key, set())
        assert sum(e["points"] for e in alert["episodes"]) == len(points), key
        for episode in alert["episodes"]:
            first, last = _ms(episode["first"]), _ms(episode["last"])
            assert set(range(first, last + step, step)) <= points, key
            assert first - step not in points and last + step not in points, key
            assert episode["points"] == (last - first) // step + 1
            assert episode["duration_seconds"] == episode["points"] * step / 1000
            state = since.get(key, {}).get(first)
            assert episode["active_since"] == (None if state is None else
                                               f"{float(state):.3f}"), key
    assert "Watchdog" in names


@pytest.mark.timeout(900)
def test_html_has_each_slo_row_every_plot_and_no_outside_resource(run: Run) -> None:
    """sla.html holds a row and a burn-down plot per SLO, the two summary plots and all
    PromQL, and loads nothing from elsewhere."""
    html = run.html
    for row in run.data["slos"]:
        assert f'<tr id="slo-{row["slo"]}">' in html
        assert f'<svg id="plot-burn-down-{row["slo"]}"' in html
        assert "<polyline" in html.split(f'id="plot-burn-down-{row["slo"]}"')[1].split("</svg>")[0]
    assert '<svg id="plot-attainment"' in html and '<svg id="plot-alerts"' in html
    for alert in run.data["alerts"]["series"]:
        assert alert["labels"]["alertname"] in html
    assert not re.search(r"<script|<link|<img|src=", html)


@pytest.mark.timeout(900)
def test_every_trace_link_of_the_report_resolves_in_jaeger(run: Run) -> None:
    """Each listed trace is in Jaeger's API with a failed span of the service it is listed
    under, its link opens that trace in Zipkin Lens (the trace is in Zipkin's API), and the
    workload's failed tools are listed (unless more than --traces failed)."""
    links = re.findall(r'href="([^"]*/traces/[0-9a-f]+)"', run.html)
    assert sorted(links) == sorted(t["link"] for s in run.data["traces"] for t in s["top"])
    for section in run.data["traces"]:
        for listed in section["top"]:
            assert listed["link"] == f"{ZIPKIN}/zipkin/traces/{listed['trace_id']}"
            assert live.get_json(f"{ZIPKIN}/zipkin/api/v2/trace/{listed['trace_id']}"), (
                f"{listed['link']} is not in Zipkin")
            found = live.get_json(f"{live.JAEGER}/api/traces/{listed['trace_id']}")["data"]
            assert found, f"{listed['link']} is not in Jaeger"
            services = {pid: p["serviceName"] for pid, p in found[0]["processes"].items()}
            assert any(
                services[span["processID"]] == section["service"]
                and any(t["key"] == "error" and t["value"] is True for t in span["tags"])
                for span in found[0]["spans"]
            ), (section["service"], listed["link"])
    tools = next(s for s in run.data["traces"] if s["service"] == "tool-executor")
    listed_ids = {t["trace_id"] for t in tools["top"]}
    if tools["found"] <= TRACES_LISTED:
        assert set(run.failed_traces) <= listed_ids, tools
    else:
        assert len(listed_ids) == TRACES_LISTED


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", "before it starts"),
        ("yesterday", "now", "'yesterday' is not a time"),
        ("-1h", "2026-13-45T99:00:00Z", "is not a time"),
        ("2026-01-01T00:00:00", "now", "has no UTC offset"),
        ("-1h", "2999-01-01T00:00:00Z", "ends in the future"),
        ("-30s", "now", "the shortest is 1m"),
    ],
)
def test_a_bad_period_exits_2_with_an_error_naming_the_problem(
    tmp_path: Path, start: str, end: str, message: str
) -> None:
    """A time that is not one, or a period that is not one, exits 2 and writes nothing."""
    out = tmp_path / "out"
    done = _report("--from", start, "--to", end, "--out", str(out),
                   "--prometheus", "http://127.0.0.1:1")
    assert done.returncode == 2, done.stderr
    assert "error: bad period: " in done.stderr and message in done.stderr, done.stderr
    assert not out.exists()


def test_an_unreachable_prometheus_exits_1_with_an_error_naming_it(tmp_path: Path) -> None:
    """With nothing listening at --prometheus, the error names Prometheus and its address."""
    out = tmp_path / "out"
    done = _report("--from", "-1h", "--to", "now", "--out", str(out),
                   "--prometheus", "http://127.0.0.1:1")
    assert done.returncode == 1, done.stderr
    assert "Prometheus at http://127.0.0.1:1 is unreachable" in done.stderr, done.stderr
    assert not out.exists()
