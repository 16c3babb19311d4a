"""The trace UI in a real browser: Zipkin Lens shows the demo's conversation after the demo.

One run of the demo workload (``python -m services.demo``), then headless Chromium (Debian's
``chromium``, installed by stack/install/apt-packages.sh) opens the links the demo prints and
the searches docs/trace-ui.md documents, and each test asserts on the rendered page (the DOM
after Lens's JavaScript ran), not on the API behind it:

* the printed trace link shows the waterfall of the tool request's conversation: one row per
  span Zipkin holds, gateway -> conversation-worker -> tool-executor;
* Lens searches by service, by operation and by tag list the conversation (search by trace id
  is the trace page: Lens's "Search by trace ID" box opens /zipkin/traces/<id>);
* the printed Jaeger API link answers the same trace as JSON.

Every page opened is also saved as a screenshot under ``.stack/artifacts/ui/`` (git-ignored
with ``.stack/``; CI keeps that folder as its artifacts), named after the test.
"""

from __future__ import annotations

import html
import itertools
import re
import shutil
import subprocess
import sys
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from services.demo import lens_search_url
from tests import live

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".stack" / "artifacts" / "ui"
ZIPKIN = "http://127.0.0.1:9411"
DEMO_TIMEOUT_SECONDS = 240
WAIT_SECONDS = 90
#: Tall enough that Lens's virtualised waterfall renders every row of a demo conversation.
DOM_WINDOW = "1400,4000"
SCREENSHOT_WINDOW = "1400,1000"
#: The spans of a tool request's conversation, by service (Zipkin lowercases span names).
CONVERSATION = {
    "gateway": ["post /v1/sessions/{session_id}/messages", "conversation.events send",
                "process conversation.replies"],
    "conversation-worker": ["process conversation.events", "conversation.process",
                            "tool.requests send", "chat smollm2-135m-instruct",
                            "conversation.replies send"],
    "tool-executor": ["process tool.requests", "execute_tool calculate", "tool.results send"],
}
_DURATION = re.compile(r"[\d.]+(μs|ms|s)")

pytestmark = pytest.mark.usefixtures("stack")


def _chromium() -> str:
    path = shutil.which("chromium")
    assert path, "chromium is not installed (stack/install/apt-packages.sh installs it)"
    return path


def _browse(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``url`` with ``args``; give Lens 15 s of virtual time."""
    return subprocess.run(
        [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args, url],
        capture_output=True, text=True, timeout=90, check=False,
    )


def page_lines(url: str, profile: Path) -> tuple[list[str], str]:
    """The visible text of ``url`` once rendered, one line per text node, and its DOM."""
    done = _browse(url, profile, f"--window-size={DOM_WINDOW}", "--dump-dom")
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-2000:]
    text = re.sub(r"<script.*?</script>|<style.*?</style>", "", done.stdout, flags=re.S)
    lines = [html.unescape(s).strip() for s in re.split(r"<[^>]+>", text)]
    return [line for line in lines if line], done.stdout


def screenshot(url: str, name: str, profile: Path) -> Path:
    """Save ``url`` as ``.stack/artifacts/ui/<name>.png``; return the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    path.unlink(missing_ok=True)
    done = _browse(url, profile, f"--window-size={SCREENSHOT_WINDOW}", f"--screenshot={path}")
    assert done.returncode == 0 and path.stat().st_size > 10_000, done.stderr[-2000:]
    return path


def waterfall_rows(lines: list[str]) -> list[str]:
    """The rows of Lens's trace waterfall: "service: span name" followed by a duration."""
    return [line for line, after in itertools.pairwise(lines)
            if re.match(r"^[\w.-]+: \S", line) and _DURATION.fullmatch(after)]


def listed_traces(dom: str) -> set[str]:
    """The trace ids a Lens search result lists (each row links to its trace page)."""
    return set(re.findall(r'href="/zipkin/traces/([0-9a-f]{16,32})"', dom))


def zipkin_spans(trace_id: str) -> list[dict[str, Any]]:
    try:
        return list(live.get_json(f"{ZIPKIN}/api/v2/trace/{trace_id}"))
    except OSError:
        return []


def _rows_of(spans: list[dict[str, Any]]) -> Counter[str]:
    return Counter(f"{s['localEndpoint']['serviceName']}: {s['name']}" for s in spans)


def _complete(spans: list[dict[str, Any]]) -> bool:
    rows = _rows_of(spans)
    return all(rows[f"{service}: {name}"] for service, names in CONVERSATION.items()
               for name in names)


@pytest.fixture(scope="module")
def demo() -> dict[str, str]:
    """One demo run: its printed links, and the tool request's trace, complete in Zipkin."""
    done = subprocess.run([sys.executable, "-m", "services.demo"], cwd=ROOT,
                          capture_output=True, text=True, timeout=DEMO_TIMEOUT_SECONDS,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    links = dict(re.findall(r"^  ([^:\n]+): (http://\S+)$", done.stdout, flags=re.M))
    trace_url = links["Zipkin Lens (one tool request, always kept)"]
    trace_id = trace_url.rsplit("/", 1)[1]
    spans = live.wait_until(lambda: zipkin_spans(trace_id), _complete, WAIT_SECONDS,
                            f"the conversation of trace {trace_id} complete in Zipkin",
                            interval=2)
    return {
        "trace_id": trace_id,
        "trace_url": trace_url,
        "search_url": links["Zipkin Lens (this run's gateway traces)"],
        "jaeger_url": links["Jaeger API (the same trace, JSON)"],
        "tenant": re.findall(r"soma\.tenant\.id=(demo-[0-9a-f]+)",
                             urllib.parse.unquote(links["Zipkin Lens (this run's gateway "
                                                        "traces)"]))[0],
        "span_count": str(len(spans)),
    }


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    """A fresh Chromium profile folder per test."""
    return tmp_path / "chromium-profile"


def test_zipkin_gets_exactly_the_tail_sampled_trace_jaeger_gets(demo: dict[str, str]) -> None:
    """The tool request's trace has the same spans in Zipkin as in Jaeger (one sampler, two
    exporters)."""
    trace_id = demo["trace_id"]

    def both() -> tuple[set[str], set[str]]:
        return ({s["id"] for s in zipkin_spans(trace_id)},
                {s["spanID"] for s in live.jaeger_trace(trace_id)})

    zipkin_ids, _ = live.wait_until(both, lambda b: b[0] == b[1], WAIT_SECONDS,
                                    f"the same spans of {trace_id} in both", interval=2)
    assert len(zipkin_ids) >= int(demo["span_count"])


def test_printed_trace_link_shows_the_conversation_waterfall(
    demo: dict[str, str], profile: Path
) -> None:
    """The demo's Lens link renders the trace: one waterfall row per span Zipkin holds, the
    conversation's spans of gateway, conversation-worker and tool-executor among them."""
    url, trace_id = demo["trace_url"], demo["trace_id"]
    assert url == f"{ZIPKIN}/zipkin/traces/{trace_id}"

    def rendered() -> tuple[list[str], Counter[str], Counter[str]]:
        lines, _ = page_lines(url, profile)
        return lines, Counter(waterfall_rows(lines)), _rows_of(zipkin_spans(trace_id))

    # A late span may land between the page's fetch and ours: compare again until they agree.
    lines, rows, _ = live.wait_until(rendered, lambda r: r[1] == r[2], WAIT_SECONDS,
                                     f"Lens's waterfall of {trace_id} = its spans", interval=1)
    missing = [f"{service}: {name}" for service, names in CONVERSATION.items()
               for name in names if not rows[f"{service}: {name}"]]
    assert not missing, f"waterfall lacks {missing}"
    assert f"Trace ID {trace_id}" in " ".join(lines)
    assert "gateway: post /v1/sessions/{session_id}/messages" in lines  # the trace's title
    order = [row.split(":")[0] for row in waterfall_rows(lines)]
    assert order.index("gateway") < order.index("conversation-worker") < order.index(
        "tool-executor"), order
    screenshot(url, "trace-waterfall", profile)


def test_printed_search_link_lists_the_runs_conversations(
    demo: dict[str, str], profile: Path
) -> None:
    """The demo's Lens search (service gateway, tag soma.tenant.id of the run) runs when
    opened and lists the tool request's trace."""
    lines, dom = page_lines(demo["search_url"], profile)
    assert "Results" in lines, lines[:40]
    assert demo["trace_id"] in listed_traces(dom)
    screenshot(demo["search_url"], "search-demo-run", profile)


def test_search_by_service_lists_gateway_traces(demo: dict[str, str], profile: Path) -> None:
    """Lens's search for service gateway lists traces rooted at the gateway's HTTP spans."""
    url = lens_search_url({"serviceName": "gateway"})
    lines, dom = page_lines(url, profile)
    assert "Results" in lines, lines[:40]
    assert "gateway: post /v1/sessions/{session_id}/messages" in lines
    assert listed_traces(dom)
    screenshot(url, "search-service-gateway", profile)


def test_search_by_operation_and_tag_finds_the_tool_call(
    demo: dict[str, str], profile: Path
) -> None:
    """Service tool-executor, operation ``execute_tool calculate`` and the run's tenant tag
    find the tool request's trace."""
    url = lens_search_url({"serviceName": "tool-executor", "spanName": "execute_tool calculate",
                           "annotationQuery": f"soma.tenant.id={demo['tenant']}"})
    lines, dom = page_lines(url, profile)
    assert "Results" in lines or "1 Result" in lines, lines[:40]
    assert demo["trace_id"] in listed_traces(dom)
    screenshot(url, "search-operation-and-tag", profile)


def test_printed_jaeger_api_link_answers_the_trace_as_json(demo: dict[str, str]) -> None:
    """The demo's Jaeger link is the JSON API (Jaeger's UI assets are not built), and it
    answers the same trace."""
    answer = live.get_json(demo["jaeger_url"])
    assert answer["data"][0]["traceID"] == demo["trace_id"]


#: What Lens shows for a search with no result (and before any search).
LENS_EMPTY = "Please select criteria in the search bar"


def _runbook_trace_links() -> list[str]:
    """The distinct Zipkin Lens links of docs/runbook.md (not the ``<trace_id>`` template)."""
    text = (ROOT / "docs" / "runbook.md").read_text()
    return sorted({link.rstrip(".,") for link in
                   re.findall(r"http://127\.0\.0\.1:9411/zipkin/[^\s)`<]*", text)
                   if not link.endswith("/traces/")})


def test_every_runbook_trace_link_runs_its_search_in_lens(
    demo: dict[str, str], profile: Path
) -> None:
    """Each trace link the runbook gives opens Lens with its criteria in the search bar and
    their result (traces, or Lens's empty result), and the searches for everything or for
    gateway list the demo's traces."""
    links = _runbook_trace_links()
    assert len(links) >= 10, links
    for link in links:
        lines, dom = page_lines(link, profile)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
        criteria = [value for key in ("serviceName", "spanName", "annotationQuery")
                    for value in query.get(key, [])]
        assert all(value in lines for value in criteria), (link, lines[:40])
        ran = any(line in ("Results", "1 Result") or line.startswith(LENS_EMPTY)
                  for line in lines)
        assert ran, (link, lines[:40])
        if "endTs" in query and set(query) <= {"serviceName", "lookback", "startTs", "endTs",
                                                "limit"} and (
                query.get("serviceName", ["gateway"]) == ["gateway"]):
            assert listed_traces(dom), (link, lines[:40])
