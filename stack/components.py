"""The components of the local stack: how each is started and how its readiness is checked.

Each ``Component`` becomes one supervisor program. ``stage`` orders start-up: every component
of a stage must be ready before the next stage starts (the collector's Kafka receiver needs the
broker, the exporters need their backends, Prometheus comes last). Paths come from ``Paths``,
built once from the repository and the cache folder.

Two profiles (``PROFILES``): ``default``, one of everything, and ``scale`` (issue 16,
docs/scale.md), the same stack shaped as a multi-machine deployment on loopback: a three-broker
KRaft Kafka (``kafka``, ``kafka-2``, ``kafka-3``), the collector as the agent tier (spanmetrics,
redaction, metrics and logs; traces leave by trace ID through the ``loadbalancing`` exporter)
in front of two gateway-tier collectors that tail-sample (``otel-gateway-1``, ``-2``), and a
second replica of the conversation worker and of the tool executor in their consumer groups.
The first instance of each keeps its default name, ports and checks, so tests and runbooks that
name ``kafka`` or ``otel-collector`` mean the same process in both profiles.
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

Check = Callable[[], str | None]
"""A readiness check: ``None`` when ready, otherwise what is wrong, in a few words."""


@dataclass(frozen=True)
class Paths:
    """Where the repository, the build cache and the stack's runtime state live."""

    repo: Path
    cache: Path
    state: Path

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def data(self) -> Path:
        return self.state / "data"

    def cached(self, pattern: str) -> Path:
        """The newest cached build matching ``pattern``, or the pattern itself when none is
        built yet (supervisor then fails to start it, and ``up`` names it)."""
        hits = sorted(glob.glob(str(self.cache / pattern)), key=os.path.getmtime)
        return Path(hits[-1]) if hits else self.cache / pattern


#: Feature gates every otelcol-soma run needs: OTTL lambdas (Any, Filter, MapEach, Reduce, When)
#: in the redaction processors rendered by collector-config/render_redaction.py.
COLLECTOR_FEATURE_GATES = "--feature-gates=ottl.functions.enableLambda"

#: Zipkin (Lens UI, docs/trace-ui.md): its port, JVM heap and in-memory span cap. Above the cap
#: the oldest traces are purged. Measured with demo conversations (37 spans of about 20 tags):
#: 22 MiB live idle, 134 MiB at the cap (2.3 KiB a span with G1's string deduplication, 4 KiB
#: without), so about half the heap stays free for queries; RSS about 425 MiB.
ZIPKIN_PORT = 9411
ZIPKIN_HEAP = "256m"
ZIPKIN_MAX_SPANS = 50_000


@dataclass(frozen=True)
class Component:
    """One supervised process of the stack."""

    name: str
    stage: int
    command: list[str]
    check: Check
    check_text: str
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    startup_seconds: float = 60.0
    #: Files in its data folder that ``up`` deletes before starting it (state that must not
    #: outlive a run of the stack).
    reset: tuple[str, ...] = ()


def http_check(url: str, must_contain: str | None = None) -> Check:
    """Ready when ``url`` answers 200 (and its body contains ``must_contain``)."""

    def check() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                body = resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except OSError as exc:
            return f"unreachable ({exc})"
        if must_contain is not None and must_contain not in body:
            return f"answer lacks {must_contain!r}"
        return None

    return check


def redis_check(port: int) -> Check:
    """Ready when Redis answers PING with PONG."""

    def check() -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError as exc:
            return f"unreachable ({exc})"
        return None if reply.startswith(b"+PONG") else f"PING answered {reply!r}"

    return check


def command_check(argv: list[str]) -> Check:
    """Ready when ``argv`` exits 0."""

    def check() -> str | None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        return None if done.returncode == 0 else (done.stderr or done.stdout).strip()[-200:]

    return check


SERVICES = [
    ("gateway", "services.gateway", 8010),
    ("conversation-worker", "services.conversation_worker", 8011),
    ("tool-executor", "services.tool_executor", 8012),
]
"""The reference SomaAgent services (docs/services.md): name, module, health port."""


def _service_env(name: str, replica: int = 1) -> dict[str, str]:
    """The owner's documented usage: OTEL_* variables and opentelemetry-instrument."""
    return {
        "OTEL_SERVICE_NAME": name,
        "OTEL_RESOURCE_ATTRIBUTES": f"service.version=0.1.0,service.instance.id={name}-{replica}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        # The WebSocket's server span would last as long as the connection.
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "healthz,readyz,/stream",
        "SOMA_AGENT_MODE": "LOCAL",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }


PROFILES = ("default", "scale")
"""The stack's shapes: ``stack/stack up --profile NAME`` starts one, ``.stack/profile`` names it."""


def running_profile(paths: Paths) -> str:
    """The profile the stack was last brought up with (``default`` before any ``up``)."""
    recorded = paths.state / "profile"
    return recorded.read_text().strip() if recorded.exists() else "default"


def components(paths: Paths, profile: str = "default") -> list[Component]:
    """Every component of the stack in ``profile``, in start-up order."""
    if profile not in PROFILES:
        raise ValueError(f"unknown stack profile {profile!r}; known: {', '.join(PROFILES)}")
    base = _default_components(paths)
    return base if profile == "default" else _scale_components(paths, base)


def _default_components(paths: Paths) -> list[Component]:
    """The default profile: one process of each component."""
    repo, data, py = paths.repo, paths.data, sys.executable
    stack = repo / "stack"
    pg_bin = (
        sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        if glob.glob("/usr/lib/postgresql/*/bin")
        else "/usr/lib/postgresql/15/bin"
    )
    kafka_ready = [py, str(stack / "kafka_ready.py"), "127.0.0.1:9092"]
    return [
        Component(
            "redis",
            1,
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--dir",
                str(data / "redis"),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            redis_check(6379),
            "PING on 127.0.0.1:6379",
        ),
        Component(
            "postgres",
            1,
            [str(stack / "postgres" / "run.sh"), str(data / "postgres"), str(paths.state / "run")],
            command_check(
                [f"{pg_bin}/pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
            ),
            "pg_isready on 127.0.0.1:5432",
            user="postgres",
        ),
        Component(
            "kafka",
            1,
            [
                str(stack / "kafka" / "run.sh"),
                str(paths.cached("kafka/*/.complete").parent),
                str(data / "kafka"),
            ],
            command_check(kafka_ready),
            "metadata request on 127.0.0.1:9092",
            startup_seconds=120,
        ),
        Component(
            "victoria-logs",
            1,
            [
                str(paths.cached("victoria-logs/*/victoria-logs")),
                f"-storageDataPath={data / 'victoria-logs'}",
                "-httpListenAddr=127.0.0.1:9428",
                "-retentionPeriod=7d",
            ],
            http_check("http://127.0.0.1:9428/health"),
            "GET 127.0.0.1:9428/health",
        ),
        Component(
            # Dashboards served live (docs/dashboards/README.md): Prometheus remote_writes
            # every sample here; vmui shows docs/dashboards/vmui/*.json at /vmui/#/dashboards.
            "victoria-metrics",
            1,
            [
                str(paths.cached("victoria-metrics/*/victoria-metrics")),
                f"-storageDataPath={data / 'victoria-metrics'}",
                "-httpListenAddr=127.0.0.1:8428",
                "-retentionPeriod=7d",
                f"-vmui.customDashboardsPath={repo / 'docs' / 'dashboards' / 'vmui'}",
                # Show remote-written samples at once (default: hide the newest 30s).
                "-search.latencyOffset=0s",
            ],
            http_check("http://127.0.0.1:8428/health"),
            "GET 127.0.0.1:8428/health",
        ),
        Component(
            "jaeger",
            1,
            [
                str(paths.cached("jaeger/*/jaeger")),
                "--config",
                str(stack / "jaeger" / "config.yaml"),
            ],
            http_check("http://127.0.0.1:16686/api/services"),
            "GET 127.0.0.1:16686/api/services",
            # Jaeger traces its own query API over OTLP to localhost:4317 (the SomaAgent
            # collector) by default; send those spans to Jaeger's own receiver instead.
            env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:14317"},
        ),
        Component(
            "zipkin",
            1,
            [
                "java",
                # Heap for the in-memory store (ZIPKIN_MAX_SPANS) and the query/UI server.
                f"-Xmx{ZIPKIN_HEAP}",
                "-Xms64m",
                # Every span repeats its resource's tags (service.version, telemetry.sdk.*, ...):
                # deduplicating those strings nearly halves the heap a stored span takes.
                "-XX:+UseG1GC",
                "-XX:+UseStringDeduplication",
                # C1 only: start-up on 2 cores takes about half as long; a UI needs no C2.
                "-XX:TieredStopAtLevel=1",
                # An IPv4 socket on 127.0.0.1 (the JVM's default dual-stack socket would be
                # ::ffff:127.0.0.1, which is not loopback to docs/security.md's check).
                "-Djava.net.preferIPv4Stack=true",
                # The JDK's resolver: Armeria's own (Netty's) keeps a UDP socket bound to
                # 0.0.0.0 for DNS queries, which would count as listening beyond loopback.
                "-Dcom.linecorp.armeria.useJdkDnsResolver=true",
                "-jar",
                str(paths.cached("zipkin/*/.complete").parent / "zipkin.jar"),
                "--armeria.ports[0].ip=127.0.0.1",
                f"--armeria.ports[0].port={ZIPKIN_PORT}",
            ],
            http_check(f"http://127.0.0.1:{ZIPKIN_PORT}/health", '"UP"'),
            f"GET 127.0.0.1:{ZIPKIN_PORT}/health says UP",
            env={
                "STORAGE_TYPE": "mem",
                "MEM_MAX_SPANS": str(ZIPKIN_MAX_SPANS),
                # Only the HTTP (and gRPC, same port) span API: no broker collectors, no
                # self-tracing (the default, spelt out).
                "COLLECTOR_KAFKA_ENABLED": "false",
                "COLLECTOR_RABBITMQ_ENABLED": "false",
                "COLLECTOR_ACTIVEMQ_ENABLED": "false",
                "COLLECTOR_PULSAR_ENABLED": "false",
                "COLLECTOR_SCRIBE_ENABLED": "false",
                "SELF_TRACING_ENABLED": "false",
            },
            startup_seconds=120,
        ),
        Component(
            "alert-sink",
            1,
            [py, str(stack / "alert_sink.py"), str(data / "alert-sink" / "alerts.jsonl")],
            http_check("http://127.0.0.1:9095/health"),
            "GET 127.0.0.1:9095/health",
        ),
        Component(
            "slm",
            1,
            [
                str(paths.cached("slm/*/.complete").parent / "venv" / "bin" / "python"),
                "-m",
                "llama_cpp.server",
                "--model",
                str(
                    paths.cached("slm/*/.complete").parent / "model" / "smollm2-135m-instruct.gguf"
                ),
                "--model_alias",
                "smollm2-135m-instruct",
                "--host",
                "127.0.0.1",
                "--port",
                "8100",
                "--n_ctx",
                "2048",
                "--n_threads",
                "1",
            ],
            http_check("http://127.0.0.1:8100/v1/models", "smollm2-135m-instruct"),
            "GET 127.0.0.1:8100/v1/models",
            startup_seconds=120,
        ),
        Component(
            "otel-collector",
            2,
            [
                str(paths.cached("otelcol/*/otelcol-soma")),
                COLLECTOR_FEATURE_GATES,
                "--config",
                str(repo / "collector-config" / "config.yaml"),
            ],
            http_check("http://127.0.0.1:13133/"),
            "GET 127.0.0.1:13133/ (health_check)",
            env={"SOMA_STACK_DATA": str(data), "KAFKA_BOOTSTRAP": "127.0.0.1:9092"},
        ),
        Component(
            "redis-exporter",
            2,
            [
                "prometheus-redis-exporter",
                "--redis.addr=redis://127.0.0.1:6379",
                "--web.listen-address=127.0.0.1:9121",
            ],
            http_check("http://127.0.0.1:9121/metrics", "redis_up 1"),
            "GET 127.0.0.1:9121/metrics shows redis_up 1",
        ),
        Component(
            "postgres-exporter",
            2,
            ["prometheus-postgres-exporter", "--web.listen-address=127.0.0.1:9187"],
            http_check("http://127.0.0.1:9187/metrics", "pg_up 1"),
            "GET 127.0.0.1:9187/metrics shows pg_up 1",
            env={
                "DATA_SOURCE_NAME": "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable"
            },
        ),
        Component(
            "alertmanager",
            2,
            [
                "prometheus-alertmanager",
                f"--config.file={repo / 'infra' / 'prometheus' / 'alertmanager.yml'}",
                f"--storage.path={data / 'alertmanager'}",
                "--web.listen-address=127.0.0.1:9093",
                "--cluster.listen-address=",
            ],
            http_check("http://127.0.0.1:9093/-/ready"),
            "GET 127.0.0.1:9093/-/ready",
            # The notification log: with it, an alert that was notified as firing in an earlier
            # run whose stack stopped before its resolution went out is not notified again
            # for repeat_interval (4h), and the outage tests wait for it in vain.
            reset=("nflog",),
        ),
        Component(
            "prometheus",
            3,
            [
                "prometheus",
                f"--config.file={repo / 'infra' / 'prometheus' / 'prometheus.yml'}",
                f"--storage.tsdb.path={data / 'prometheus'}",
                # The default 15d is shorter than the 28-day SLO windows of rules/slo.yml;
                # tests/rules/test_retention.py keeps this at least the longest range a rule reads.
                "--storage.tsdb.retention.time=30d",
                "--web.listen-address=127.0.0.1:9090",
                "--web.enable-lifecycle",
                "--web.enable-admin-api",
                "--enable-feature=exemplar-storage",
            ],
            http_check("http://127.0.0.1:9090/-/ready"),
            "GET 127.0.0.1:9090/-/ready",
        ),
        *[
            Component(
                name,
                4,
                [
                    str(paths.repo / ".venv" / "bin" / "opentelemetry-instrument"),
                    py,
                    "-m",
                    module,
                ],
                http_check(f"http://127.0.0.1:{port}/readyz"),
                f"GET 127.0.0.1:{port}/readyz",
                env=_service_env(name),
            )
            for name, module, port in SERVICES
        ],
    ]


KAFKA_CLUSTER = (
    # node id, broker port, controller port, JMX exporter port (9093/9094: Alertmanager)
    (1, 9092, 19093, 9404),
    (2, 29092, 29093, 9405),
    (3, 39092, 39093, 9406),
)
"""The scale profile's KRaft nodes, each broker and controller (stack/kafka/cluster.properties)."""

KAFKA_CLUSTER_BOOTSTRAP = ",".join(f"127.0.0.1:{broker}" for _, broker, _, _ in KAFKA_CLUSTER)

GATEWAY_TIER = (
    # name, OTLP/gRPC receiver, health_check, own telemetry port
    ("otel-gateway-1", "127.0.0.1:4417", "127.0.0.1:13136", 8898),
    ("otel-gateway-2", "127.0.0.1:4517", "127.0.0.1:13137", 8899),
)
"""The scale profile's gateway-tier collectors (collector-config/gateway.yaml)."""

REPLICAS = {"conversation-worker": 8013, "tool-executor": 8014}
"""The scale profile's second replica of each consumer service: name and its health port."""

_REPLICA_PORT_VARIABLE = {"conversation-worker": "WORKER_PORT", "tool-executor": "EXECUTOR_PORT"}


def _scale_components(paths: Paths, base: list[Component]) -> list[Component]:
    """The scale profile: ``base`` with its Kafka, collector and consumers multiplied."""
    repo = paths.repo
    by_name = {c.name: c for c in base}
    kafka_nodes = [_kafka_node(paths, *node) for node in KAFKA_CLUSTER]
    collector = by_name["otel-collector"]
    agent = replace(
        collector,
        command=[
            *collector.command,
            "--config",
            str(repo / "collector-config" / "agent.yaml"),
            "--config",
            str(repo / "collector-config" / "agent-local.yaml"),
        ],
        env={
            **collector.env,
            "SOMA_GATEWAY_HOSTNAMES": "[" + ",".join(g[1] for g in GATEWAY_TIER) + "]",
        },
    )
    gateways = [
        Component(
            name,
            2,
            [
                str(paths.cached("otelcol/*/otelcol-soma")),
                COLLECTOR_FEATURE_GATES,
                "--config",
                str(repo / "collector-config" / "gateway.yaml"),
            ],
            http_check(f"http://{health}/"),
            f"GET {health}/ (health_check)",
            env={
                "SOMA_GATEWAY_OTLP_GRPC": otlp,
                "SOMA_GATEWAY_HEALTH": health,
                "SOMA_GATEWAY_TELEMETRY_PORT": str(telemetry),
            },
        )
        for name, otlp, health, telemetry in GATEWAY_TIER
    ]
    prometheus = by_name["prometheus"]
    prometheus = replace(
        prometheus,
        command=[
            f"--config.file={scale_prometheus_config_path(paths)}"
            if arg.startswith("--config.file=")
            else arg
            for arg in prometheus.command
        ],
    )
    services = [
        replace(c, env={**c.env, "KAFKA_BOOTSTRAP_SERVERS": KAFKA_CLUSTER_BOOTSTRAP})
        for c in base
        if c.stage == 4
    ]
    replicas = [
        replace(
            by_name[name],
            name=f"{name}-2",
            check=http_check(f"http://127.0.0.1:{port}/readyz"),
            check_text=f"GET 127.0.0.1:{port}/readyz",
            env={
                **_service_env(name, replica=2),
                "KAFKA_BOOTSTRAP_SERVERS": KAFKA_CLUSTER_BOOTSTRAP,
                _REPLICA_PORT_VARIABLE[name]: str(port),
            },
        )
        for name, port in REPLICAS.items()
    ]
    swapped = {
        "kafka": kafka_nodes,
        "otel-collector": [*gateways, agent],
        "prometheus": [prometheus],
    }
    stack = [new for c in base if c.stage < 4 for new in swapped.get(c.name, [c])]
    return [*stack, *services, *replicas]


def _kafka_node(paths: Paths, node: int, broker: int, controller: int, jmx: int) -> Component:
    """Node ``node`` of the three-node KRaft cluster (stack/kafka/run.sh's cluster form: it takes
    the node's own port from each list)."""
    stack = paths.repo / "stack"
    return Component(
        "kafka" if node == 1 else f"kafka-{node}",
        1,
        [
            str(stack / "kafka" / "run.sh"),
            str(paths.cached("kafka/*/.complete").parent),
            str(paths.data / f"kafka-cluster-{node}"),
            str(node),
            ",".join(str(n[1]) for n in KAFKA_CLUSTER),
            ",".join(str(n[2]) for n in KAFKA_CLUSTER),
            ",".join(str(n[3]) for n in KAFKA_CLUSTER),
        ],
        # Ready once the node is a live broker of the cluster: the three start in one stage,
        # so the next stage waits for all of them.
        command_check([sys.executable, str(stack / "kafka_ready.py"), f"127.0.0.1:{broker}"]),
        f"127.0.0.1:{broker} answers metadata listing itself as a live broker",
        startup_seconds=180,
    )


def scale_prometheus_config_path(paths: Paths) -> Path:
    """Where ``stack/stack up --profile scale`` writes :func:`scale_prometheus_config`."""
    return paths.state / "run" / "prometheus-scale.yml"


def scale_prometheus_config(paths: Paths) -> str:
    """infra/prometheus/prometheus.yml with the scale profile's extra targets.

    The repository's file stays the default profile's; this copy adds the brokers' JMX exporters
    and the gateway-tier collectors' own telemetry, and makes the rule files absolute.
    """
    source = paths.repo / "infra" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(source.read_text())
    config["rule_files"] = [str(source.parent / rule) for rule in config["rule_files"]]
    extra = {
        "kafka": [f"127.0.0.1:{jmx}" for _, _, _, jmx in KAFKA_CLUSTER[1:]],
        "otel-collector-self": [f"127.0.0.1:{g[3]}" for g in GATEWAY_TIER],
    }
    for job in config["scrape_configs"]:
        job["static_configs"][0]["targets"] += extra.get(job["job_name"], [])
    return (
        f"# Generated by stack/components.py from {source.relative_to(paths.repo)}; do not edit.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
