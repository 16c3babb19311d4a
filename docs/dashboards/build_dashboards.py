#!/usr/bin/env python3
"""Build the dashboards of this folder from the panel lists below, in two formats.

Edit a panel here and rerun `python docs/dashboards/build_dashboards.py`; the JSON files are
its output (tests/rules/test_dashboards.py fails when they differ):

* `*.json` here: Grafana dashboards for production users. Every panel uses the data source
  chosen in the dashboard's `datasource` variable (a Prometheus on 127.0.0.1:9090 locally).
* `vmui/*.json`: the same dashboards as VictoriaMetrics vmui custom dashboards, served live by
  the stack's VictoriaMetrics (`-vmui.customDashboardsPath`, http://127.0.0.1:8428/vmui/#/dashboards),
  which gets every Prometheus sample by remote_write.

Every panel links to the traces (Zipkin Lens) and logs (VictoriaLogs vmui) of its dashboard's
services: Grafana panel links, and Markdown links in the vmui panel's description (vmui
renders the description, under the panel's info icon, as Markdown).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
VMUI_DIR = HERE / "vmui"
ZIPKIN = "http://127.0.0.1:9411"
VICTORIA_LOGS = "http://127.0.0.1:9428"
SERVICES = ("gateway", "conversation-worker", "tool-executor")
#: vmui labels the y axis with this text; Grafana's unit ids mean nothing to it.
VMUI_UNITS = {
    "percentunit": "ratio",
    "reqps": "req/s",
    "ops": "ops/s",
    "s": "s",
    "bytes": "bytes",
    "short": "",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ERROR_RATIO_THRESHOLDS = [0.01, 0.05]  # green below 1%, yellow below 5%, red above


@dataclass(frozen=True)
class Panel:
    """One panel: a title, what it shows, a Grafana unit and its (expr, legend) queries."""

    title: str
    description: str
    unit: str
    queries: list[tuple[str, str]]
    kind: str = "timeseries"
    thresholds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Dashboard:
    """One dashboard file: uid (also the file name), title and panels, two per row."""

    uid: str
    title: str
    description: str
    panels: list[Panel]
    #: Whose traces and logs every panel links to.
    services: tuple[str, ...] = SERVICES


def trace_url(service: str) -> str:
    """Zipkin Lens search for ``service``'s traces, any time (Lens runs it when opened)."""
    return (
        f"{ZIPKIN}/zipkin/?serviceName={service}&lookback=range&startTs=1"
        "&endTs=4102444800000&limit=20"
    )


def logs_url(service: str) -> str:
    """VictoriaLogs vmui showing ``service``'s logs of the last hour (LogsQL stream filter)."""
    query = quote(f'{{service.name="{service}"}}', safe="")
    return f"{VICTORIA_LOGS}/select/vmui/#/?query={query}&g0.range_input=1h"


def links(dashboard: Dashboard) -> list[tuple[str, str]]:
    """(title, url) of the traces and logs of every service of ``dashboard``."""
    return [
        pair
        for svc in dashboard.services
        for pair in ((f"Traces: {svc}", trace_url(svc)), (f"Logs: {svc}", logs_url(svc)))
    ]


def _panel_json(panel: Panel, panel_id: int, dashboard: Dashboard) -> dict[str, Any]:
    """Grafana JSON of one panel, placed by its id: two 12-wide panels per 8-high row."""
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [
        {"color": c, "value": v} for c, v in zip(("yellow", "red"), panel.thresholds, strict=False)
    ]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {
            "h": 8,
            "w": 12,
            "x": 12 * ((panel_id - 1) % 2),
            "y": 8 * ((panel_id - 1) // 2),
        },
        "fieldConfig": {
            "defaults": {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}}
        if panel.kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(panel.queries)
        ],
        "links": [{"title": t, "url": u, "targetBlank": True} for t, u in links(dashboard)],
    }


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """Grafana JSON model of one dashboard (schema 39, Grafana 10/11)."""
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["somaagent"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "links": [
            {
                "title": "Runbook",
                "type": "link",
                "targetBlank": True,
                "url": "https://github.com/somaagent/observability/blob/main/docs/runbook.md",
            }
        ],
        "panels": [_panel_json(p, i, dashboard) for i, p in enumerate(dashboard.panels, start=1)],
    }


def vmui_json(dashboard: Dashboard) -> dict[str, Any]:
    """vmui custom dashboard of ``dashboard``: two 6-wide (of 12) panels side by side; each
    panel's description ends with Markdown links to the traces and logs."""
    link_text = " · ".join(f"[{t}]({u})" for t, u in links(dashboard))
    panels = [
        {
            "title": p.title,
            "description": f"{p.description}\n\n{link_text}",
            "unit": VMUI_UNITS[p.unit],
            "expr": [expr for expr, _ in p.queries],
            "alias": [legend for _, legend in p.queries],
            "width": 6,
        }
        for p in dashboard.panels
    ]
    return {
        "title": dashboard.title,
        # One row: vmui shows rows as accordions and opens only the first.
        "rows": [{"title": dashboard.description, "panels": panels}],
    }


SLOS = "gateway-availability|gateway-latency|conversation-success|tool-execution-success"
GW = 'job="gateway"'
RX = "otelcol_receiver_"  # prefixes of the collector's own metrics
EX = "otelcol_exporter_"
SIGNALS = "(spans|metric_points|log_records)"


def collector_rate(counters: str, by: str) -> str:
    """Items per second of the collector's own counters named ``counters``, by ``by`` and name.

    The collector (job otel-collector-self) names these counters without ``_total``; newer
    releases add it, and both match. rate() over a name regex drops ``__name__`` and Prometheus 2
    then refuses two counters with otherwise equal labels (the refused and the failed spans of
    one receiver), so the name is first copied to a ``counter`` label, over a 15s subquery.
    """
    selector = f'{{__name__=~"{counters}(_total)?", job="otel-collector-self"}}'
    return (
        f'sum by ({by}, counter) (rate(label_replace({selector}, "counter", "$1", "__name__", '
        f'"otelcol_[a-z]+_(.*?)(_total)?")[5m:15s]))'
    )


DASHBOARDS = [
    Dashboard(
        "somaagent-overview",
        "SomaAgent overview and SLOs",
        "Traffic, firing alerts, SLO error budgets and burn rates (rules/slo.yml).",
        [
            Panel(
                "Error budget left (28d)",
                "1 = whole budget left, 0 = spent, below 0 = SLO missed.",
                "percentunit",
                [("slo:error_budget_remaining:ratio28d", "{{slo}}")],
                kind="stat",
            ),
            Panel(
                "Firing alerts",
                "Alerts firing now, by name and severity (Watchdog always fires).",
                "short",
                [
                    (
                        'sum by (alertname, severity) (ALERTS{alertstate="firing"})',
                        "{{alertname}} ({{severity}})",
                    )
                ],
                kind="stat",
            ),
            Panel(
                "Burn rate over 1h (page at 14.4)",
                "Error ratio over 1h divided by the error budget.",
                "short",
                [("slo:sli_error:ratio_rate1h / slo:error_budget:ratio", "{{slo}}")],
            ),
            Panel(
                "Burn rate over 6h (page at 6) and 3d (ticket at 1)",
                "Error ratio over 6h and 3d divided by the error budget.",
                "short",
                [
                    ("slo:sli_error:ratio_rate6h / slo:error_budget:ratio", "{{slo}} 6h"),
                    ("slo:sli_error:ratio_rate3d / slo:error_budget:ratio", "{{slo}} 3d"),
                ],
            ),
            Panel(
                "SLI error ratio over 5m",
                "Bad events / all events per SLO.",
                "percentunit",
                [(f'slo:sli_error:ratio_rate5m{{slo=~"{SLOS}"}}', "{{slo}}")],
            ),
            Panel(
                "Requests per second by service",
                "HTTP requests of every service.",
                "reqps",
                [("sum by (job) (job_status:http_requests:rate5m)", "{{job}}")],
            ),
        ],
    ),
    Dashboard(
        "somaagent-gateway",
        "SomaAgent gateway",
        "Gateway RED metrics from spanmetrics (HighGatewayLatency, HighGatewayErrorRate).",
        [
            Panel(
                "Requests per second by status",
                "All gateway instances.",
                "reqps",
                [
                    (
                        'sum by (status) (job_status:http_requests:rate5m{job="gateway"})',
                        "{{status}}",
                    )
                ],
            ),
            Panel(
                "5xx ratio (alert above 1%)",
                "Share of requests with a 5xx status over 5m.",
                "percentunit",
                [
                    (
                        # A 5xx series exists only after the first 5xx: count none as 0.
                        f'(sum by (job) (job_status:http_requests:rate5m{{{GW}, status=~"5.."}})'
                        ' or 0 * sum by (job) (job_status:http_requests:rate5m{job="gateway"}))'
                        ' / sum by (job) (job_status:http_requests:rate5m{job="gateway"})',
                        "5xx ratio",
                    )
                ],
                thresholds=ERROR_RATIO_THRESHOLDS,
            ),
            Panel(
                "Latency p95 and p99 (alert: p95 above 2.5s)",
                "Over all instances and endpoints.",
                "s",
                [
                    ('job:http_request_duration_seconds:p95_5m{job="gateway"}', "p95"),
                    ('job:http_request_duration_seconds:p99_5m{job="gateway"}', "p99"),
                ],
            ),
            Panel(
                "Latency p95 by endpoint",
                "Which route is slow.",
                "s",
                [
                    (
                        "histogram_quantile(0.95, sum by (endpoint, le) "
                        '(rate(http_request_duration_seconds_bucket{job="gateway"}[5m])))',
                        "{{endpoint}}",
                    )
                ],
            ),
            Panel(
                "Requests per second by endpoint and method",
                "Traffic mix.",
                "reqps",
                [
                    (
                        'sum by (endpoint, method) (rate(http_requests_total{job="gateway"}[5m]))',
                        "{{method}} {{endpoint}}",
                    )
                ],
            ),
            Panel(
                "Share of requests within 2.5s (SLO 99%)",
                "The latency SLI over 5m.",
                "percentunit",
                [
                    (
                        f'sum(rate(http_request_duration_seconds_bucket{{{GW}, le="2.5"}}[5m]))'
                        " / sum(rate(http_request_duration_seconds_bucket"
                        f'{{{GW}, le="+Inf"}}[5m]))',
                        "within 2.5s",
                    )
                ],
            ),
            Panel(
                "Sessions created per second",
                "sessions_created_total: new conversation sessions.",
                "ops",
                [('sum by (job) (rate(sessions_created_total{job="gateway"}[5m]))', "sessions")],
            ),
            Panel(
                "Auth attempts per second by result",
                "auth_attempts_total: success, failure, missing credentials.",
                "ops",
                [
                    (
                        'sum by (result) (rate(auth_attempts_total{job="gateway"}[5m]))',
                        "{{result}}",
                    )
                ],
            ),
            Panel(
                "Policy evaluations per second by result",
                "policy_evaluations_total: allow, deny, error.",
                "ops",
                [
                    (
                        'sum by (result) (rate(policy_evaluations_total{job="gateway"}[5m]))',
                        "{{result}}",
                    )
                ],
            ),
            Panel(
                "Open WebSocket connections",
                "websocket_connections_active, all gateway instances.",
                "short",
                [('sum by (job) (websocket_connections_active{job="gateway"})', "connections")],
            ),
        ],
        services=("gateway",),
    ),
    Dashboard(
        "somaagent-conversation-worker",
        "SomaAgent conversation worker",
        "Conversation processing, SLM calls and token budgets.",
        [
            Panel(
                "Conversations per second",
                "conversation.process spans, all workers.",
                "ops",
                [("sum(rate(conversation_requests_total[5m]))", "conversations")],
            ),
            Panel(
                "Failure ratio (alert above 5%)",
                "Failed / all conversations over 5m.",
                "percentunit",
                [
                    (
                        "sum by (job) (rate(conversation_errors_total[5m]))"
                        " / sum by (job) (rate(conversation_requests_total[5m]))",
                        "failure ratio",
                    )
                ],
                thresholds=ERROR_RATIO_THRESHOLDS,
            ),
            Panel(
                "Failures per second by error type",
                "From the span's error.type.",
                "ops",
                [("sum by (error_type) (rate(conversation_errors_total[5m]))", "{{error_type}}")],
            ),
            Panel(
                "Processing time p95 (alert above 5s)",
                "Over all workers.",
                "s",
                [("job:conversation_processing_duration_seconds:p95_5m", "p95")],
            ),
            Panel(
                "SLM calls per second and p95 latency by model",
                "chat spans.",
                "short",
                [
                    ("model:slm_requests:rate5m", "{{model}} calls/s"),
                    ("model:slm_latency_seconds:p95_5m", "{{model}} p95 (s)"),
                ],
            ),
            Panel(
                "SLM tokens per second by model and type",
                "Input and output tokens.",
                "short",
                [("sum by (model, type) (rate(slm_tokens_total[5m]))", "{{model}} {{type}}")],
            ),
            Panel(
                "Tokens per second by tenant (1h average)",
                "Budget consumption.",
                "short",
                [("tenant:budget_tokens_consumed:rate1h", "{{tenant}}")],
            ),
            Panel(
                "Budget limit hits per tenant in 5m (alert above 10)",
                "TenantBudgetExhausted.",
                "short",
                [("sum by (tenant) (increase(budget_limit_reached_total[5m]))", "{{tenant}}")],
            ),
            Panel(
                "Intent classifications per second by intent",
                "intent_classification_total: what users ask for.",
                "ops",
                [("sum by (intent) (rate(intent_classification_total[5m]))", "{{intent}}")],
            ),
        ],
        services=("conversation-worker",),
    ),
    Dashboard(
        "somaagent-tool-executor",
        "SomaAgent tool executor",
        "Tool executions, failures, durations and policy blocks.",
        [
            Panel(
                "Executions per second by tool and status",
                "execute_tool spans.",
                "ops",
                [
                    (
                        "sum by (tool_name, status) (rate(tool_execution_total[5m]))",
                        "{{tool_name}} {{status}}",
                    )
                ],
            ),
            Panel(
                "Failure ratio (alert above 10%)",
                "All tools together, and per tool.",
                "percentunit",
                [
                    (
                        'sum by (job) (rate(tool_execution_total{status="failure"}[5m]))'
                        " / sum by (job) (rate(tool_execution_total[5m]))",
                        "all tools",
                    ),
                    (
                        'sum by (tool_name) (rate(tool_execution_total{status="failure"}[5m]))'
                        " / sum by (tool_name) (rate(tool_execution_total[5m]))",
                        "{{tool_name}}",
                    ),
                ],
                thresholds=[0.05, 0.10],
            ),
            Panel(
                "Failures per second by tool and error type",
                "From the span's error.type.",
                "ops",
                [
                    (
                        "sum by (tool_name, error_type) (rate(tool_execution_failures_total[5m]))",
                        "{{tool_name}} {{error_type}}",
                    )
                ],
            ),
            Panel(
                "Execution time p95 by tool",
                "Sandbox runs included.",
                "s",
                [
                    (
                        "histogram_quantile(0.95, sum by (tool_name, le) "
                        "(rate(tool_execution_duration_seconds_bucket[5m])))",
                        "{{tool_name}}",
                    )
                ],
            ),
            Panel(
                "Policy blocks per second by tenant (alert above 10/s overall)",
                "HighPolicyBlockRate.",
                "ops",
                [("sum by (tenant) (rate(policy_blocked_total[5m]))", "{{tenant}}")],
            ),
            Panel(
                "Sandbox executions running",
                "sandbox_active_executions, all executors.",
                "short",
                [("sum by (job) (sandbox_active_executions)", "running")],
            ),
            Panel(
                "CPU seconds per second by tool",
                "resource_usage_cpu_seconds_total: the sandbox's CPU time.",
                "short",
                [
                    (
                        "sum by (tool_name) (rate(resource_usage_cpu_seconds_total[5m]))",
                        "{{tool_name}}",
                    )
                ],
            ),
            Panel(
                "Peak memory per execution by tool (mean since start)",
                "resource_usage_memory_bytes: the sandbox's peak memory, a histogram.",
                "bytes",
                [
                    (
                        "sum by (tool_name) (resource_usage_memory_bytes_sum)"
                        " / sum by (tool_name) (resource_usage_memory_bytes_count)",
                        "{{tool_name}}",
                    )
                ],
            ),
        ],
        services=("tool-executor",),
    ),
    Dashboard(
        "somaagent-kafka-dlq",
        "SomaAgent Kafka and dead-letter queues",
        "Broker, consumer lag per group and dead-lettered events per source topic.",
        [
            Panel(
                "Broker scraped (KafkaDown at 0)",
                "up of the JMX exporter inside the broker.",
                "short",
                [('up{job="kafka"}', "{{instance}}")],
                kind="stat",
            ),
            Panel(
                "Consumer lag by group (alert above 1000)",
                "Summed over topics and partitions; each agent reports it, counted once.",
                "short",
                [("sum by (group) (max by (group, topic) (kafka_consumer_lag))", "{{group}}")],
                thresholds=[500, 1000],
            ),
            Panel(
                "Consumer lag by group and topic",
                "Where the lag is.",
                "short",
                [("max by (group, topic) (kafka_consumer_lag)", "{{group}} {{topic}}")],
            ),
            Panel(
                "Dead-lettered events per second",
                "By source topic and error type.",
                "ops",
                [
                    (
                        "sum by (source_topic, error_type) (rate(dlq_events_total[5m]))",
                        "{{source_topic}} {{error_type}}",
                    )
                ],
            ),
            Panel(
                "Dead-lettered events in the last hour",
                "By source topic.",
                "short",
                [("sum by (source_topic) (increase(dlq_events_total[1h]))", "{{source_topic}}")],
                kind="stat",
            ),
        ],
    ),
    Dashboard(
        "somaagent-pipeline",
        "SomaAgent telemetry pipeline health",
        "Scrape targets, the collector's receivers, exporters and queues, data stores.",
        [
            Panel(
                "Scrape targets up",
                "1 = scraped; every job Prometheus knows.",
                "short",
                [("up", "{{job}} {{instance}}")],
                kind="stat",
            ),
            Panel(
                "Collector: items accepted per second by receiver",
                "Spans, metric points, log records of the otel collector (otel-collector-self).",
                "short",
                [
                    (
                        collector_rate(f"{RX}accepted_{SIGNALS}", "receiver"),
                        "{{receiver}} {{counter}}",
                    )
                ],
            ),
            Panel(
                "Collector: items refused or failed per second",
                "OtelCollectorRefusingTelemetry.",
                "short",
                [
                    (
                        collector_rate(f"{RX}(refused|failed)_{SIGNALS}", "receiver"),
                        "{{receiver}} {{counter}}",
                    )
                ],
            ),
            Panel(
                "Collector: items sent and lost per second by exporter",
                "OtelCollectorDroppingTelemetry.",
                "short",
                [
                    (
                        collector_rate(f"{EX}sent_{SIGNALS}", "exporter"),
                        "{{exporter}} {{counter}}",
                    ),
                    (
                        # The failure counters appear with the first lost item: 0 until then.
                        collector_rate(f"{EX}(send|enqueue)_failed_{SIGNALS}", "exporter")
                        + " or vector(0)",
                        "{{exporter}} {{counter}}",
                    ),
                ],
            ),
            Panel(
                "Collector: exporter queue fill (alert above 80%)",
                "Queue size / capacity.",
                "percentunit",
                [
                    (
                        f"max by (exporter) ({EX}queue_size / {EX}queue_capacity)",
                        "{{exporter}}",
                    )
                ],
                thresholds=[0.5, 0.8],
            ),
            Panel(
                "Series per service",
                "ServiceTelemetryMissing fires when one drops to none.",
                "short",
                [
                    (
                        'count by (job) ({job=~"gateway|conversation-worker|tool-executor"})',
                        "{{job}}",
                    )
                ],
            ),
            Panel(
                "Redis and PostgreSQL reachable",
                "redis_up and pg_up from their exporters.",
                "short",
                [("redis_up", "redis {{instance}}"), ("pg_up", "postgres {{instance}}")],
                kind="stat",
            ),
            Panel(
                "Watchdog",
                "Always 1 while rules are evaluated.",
                "short",
                [('ALERTS{alertname="Watchdog", alertstate="firing"}', "watchdog")],
                kind="stat",
            ),
        ],
    ),
]


def main() -> None:
    """Write one Grafana and one vmui JSON file per dashboard, named after its uid without the
    prefix."""
    VMUI_DIR.mkdir(exist_ok=True)
    for dashboard in DASHBOARDS:
        name = dashboard.uid.removeprefix("somaagent-") + ".json"
        (HERE / name).write_text(json.dumps(dashboard_json(dashboard), indent=2) + "\n")
        vmui = json.dumps(vmui_json(dashboard), indent=2, ensure_ascii=False) + "\n"
        (VMUI_DIR / name).write_text(vmui)


if __name__ == "__main__":
    main()
