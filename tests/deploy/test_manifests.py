"""The Kubernetes manifests (deploy/k8s/base, docs/deploy.md), validated as strictly as a machine
without a cluster allows: the generated files are up to date, a real kustomize (built from the Go
module proxy, deploy/install_kustomize.sh) builds the base, every collector pod's --config set
loads in the real otelcol-soma with the pod's own env, every PrometheusRule passes promtool and
equals its source file, and the objects reference each other consistently.

Nothing here needs the stack running or a network (beyond the one-time kustomize build).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.render import COLLECTOR_FILES
from stack.components import COLLECTOR_FEATURE_GATES
from stack.stackctl import stack_paths
from tests import live
from tests.collector.moved import free_ports

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "k8s" / "base"
PROMETHEUS_YML = REPO / "infra" / "prometheus" / "prometheus.yml"

#: Secrets the base references but must not carry (created out of band, docs/deploy.md), with
#: the keys the pods read.
EXTERNAL_SECRETS = {"otlp-token": {"token", "otlp-headers"}}
#: The one container allowed to run as root: chowns the agent's hostPath queue directory.
ROOT_CONTAINERS = {("otelcol-agent", "queue-owner")}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}


@pytest.fixture(scope="module")
def kustomize() -> Path:
    """The pinned kustomize, built once and cached under ~/.cache/somaagent-stack/kustomize/."""
    result = subprocess.run(
        [str(REPO / "deploy" / "install_kustomize.sh")], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"kustomize build failed:\n{result.stderr[-3000:]}"
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def objects(kustomize: Path) -> list[dict]:
    result = subprocess.run(
        [str(kustomize), "build", str(BASE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert docs, "kustomize build produced nothing"
    return docs


def _by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _containers(workload: dict) -> list[dict]:
    spec = _pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "render.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_object_is_namespaced_and_labelled(objects: list[dict]) -> None:
    for obj in objects:
        meta = obj["metadata"]
        if obj["kind"] != "Namespace":
            assert meta.get("namespace") == "somaagent", f"{obj['kind']}/{meta['name']}"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "somaagent", (
            f"{obj['kind']}/{meta['name']}"
        )


def test_collector_configmap_holds_the_sources_verbatim(objects: list[dict]) -> None:
    data = _by_kind(objects, "ConfigMap")["otelcol-config"]["data"]
    assert set(data) == set(COLLECTOR_FILES)
    for key, path in COLLECTOR_FILES.items():
        assert data[key] == path.read_text(), f"{key} differs from {path.relative_to(REPO)}"


def test_alertmanager_secret_is_the_local_config(objects: list[dict]) -> None:
    secret = _by_kind(objects, "Secret")["alertmanager-somaagent"]
    text = (REPO / "infra" / "prometheus" / "alertmanager.yml").read_text()
    assert secret["stringData"]["alertmanager.yaml"] == text
    alertmanager = _by_kind(objects, "Alertmanager")["somaagent"]
    assert alertmanager["spec"]["configSecret"] == "alertmanager-somaagent"


def _collector_pods(objects: list[dict]) -> list[tuple[dict, dict]]:
    pods = [
        (w, c)
        for w in objects
        if w["kind"] in WORKLOADS
        for c in _pod_spec(w)["containers"]
        if c["image"].split(":")[0].endswith("/otelcol-soma")
    ]
    assert {w["metadata"]["name"] for w, _ in pods} == {"otelcol-agent", "otelcol-gateway"}
    return pods


def _config_files(container: dict) -> list[str]:
    files, args = [], container["args"]
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
        elif arg == "--config":
            files.append(args[i + 1])
    return files


def _validate(files: list[Path], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = stack_paths().cached("otelcol/*/otelcol-soma")
    assert binary.exists(), f"no collector build at {binary} (run stack/stack up once)"
    argv = [str(binary), "validate", COLLECTOR_FEATURE_GATES]
    for f in files:
        argv += ["--config", str(f)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


def _pod_env(workload: dict, container: dict, tmp: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """The container's env as the pod would see it; in-pod paths (volume mounts) map into tmp."""
    mounts: dict[str, Path] = {}
    config = tmp / "config"
    config.mkdir()
    volumes = {v["name"]: v for v in _pod_spec(workload)["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes.get(mount["name"])
        local = config if volume and "configMap" in volume else tmp / mount["name"]
        local.mkdir(exist_ok=True)
        mounts[mount["mountPath"]] = local
    (tmp / "token").mkdir(exist_ok=True)
    (mounts.get("/var/run/secrets/somaagent/otlp", tmp / "token") / "token").write_text(
        "test-token\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp)}
    for var in container["env"]:
        if "value" in var:
            value = var["value"]
            for path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value.startswith(path):
                    value = str(local) + value[len(path) :]
                    break
            env[var["name"]] = value
        elif "secretKeyRef" in var["valueFrom"]:
            env[var["name"]] = "test-token"
    return env, mounts


def test_every_collector_pod_config_loads_in_the_real_binary(
    objects: list[dict], tmp_path: Path
) -> None:
    data = _by_kind(objects, "ConfigMap")["otelcol-config"]["data"]
    for workload, container in _collector_pods(objects):
        name = workload["metadata"]["name"]
        assert container["args"][0] == COLLECTOR_FEATURE_GATES, name
        tmp = tmp_path / name
        tmp.mkdir()
        env, mounts = _pod_env(workload, container, tmp)
        for key, text in data.items():
            (tmp / "config" / key).write_text(text)
        files = []
        for f in _config_files(container):
            folder, _, key = f.rpartition("/")
            assert key in data and mounts.get(folder) == tmp / "config", (
                f"{name}: {f} is not from otelcol-config"
            )
            files.append(tmp / "config" / key)
        assert files, name
        result = _validate(files, env)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


#: Each tier's exact --config list (docs/deploy.md): the repository's files, then its overlay.
TIER_CONFIGS = {
    "otelcol-agent": ["config.yaml", "agent.yaml", "auth.yaml", "agent-k8s.yaml"],
    "otelcol-gateway": ["gateway.yaml", "gateway-k8s.yaml"],
}


def _overlay(key: str) -> dict:
    return yaml.safe_load(COLLECTOR_FILES[key].read_text())


def test_each_tier_runs_its_files_and_auth_is_on_in_both(objects: list[dict]) -> None:
    """The agent runs config.yaml + agent.yaml + auth.yaml + its overlay, the gateway
    gateway.yaml + its overlay, and the gateway overlay's authenticator is auth.yaml's, key for
    key, on its one (gRPC) receiver."""
    for workload, container in _collector_pods(objects):
        keys = [f.rpartition("/")[2] for f in _config_files(container)]
        assert keys == TIER_CONFIGS[workload["metadata"]["name"]]
    auth = _overlay("auth.yaml")
    gateway = _overlay("gateway-k8s.yaml")
    name = "bearertokenauth/otlp"
    assert gateway["extensions"][name] == auth["extensions"][name]
    assert gateway["receivers"]["otlp"]["protocols"] == {"grpc": {"auth": {"authenticator": name}}}
    assert gateway["service"]["extensions"] == ["health_check", name]
    assert set(auth["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}


def test_agent_sends_sampled_traces_by_trace_id_to_the_headless_service() -> None:
    """agent.yaml sets the loadbalancing exporter without a resolver; the cluster overlay gives
    the dns resolver on the headless Service (hostname from env, port 4317, 5 s, 1 s) and the
    token header, and listens on 0.0.0.0 (receivers, Prometheus exporter, own metrics)."""
    agent = _overlay("agent.yaml")
    exporter = agent["exporters"]["loadbalancing/gateway"]
    assert exporter["routing_key"] == "traceID" and "resolver" not in exporter
    assert agent["service"]["pipelines"]["traces/sampled"]["exporters"] == ["loadbalancing/gateway"]
    k8s = _overlay("agent-k8s.yaml")
    lb = k8s["exporters"]["loadbalancing/gateway"]
    assert lb["resolver"] == {
        "dns": {
            "hostname": "${env:SOMA_GATEWAY_HEADLESS_HOST}",
            "port": "4317",
            "interval": "5s",
            "timeout": "1s",
        }
    }
    assert lb["protocol"]["otlp"]["headers"] == {"authorization": "Bearer ${env:SOMA_OTLP_TOKEN}"}
    protocols = k8s["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert k8s["exporters"]["prometheus"]["endpoint"] == "0.0.0.0:8889"
    reader = k8s["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    assert reader["prometheus"] == {"host": "0.0.0.0", "port": 8888}


def _listening_ports(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket the process holds, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[9]) in inodes:
                address, port = fields[1].split(":")
                found.add((address, int(port, 16)))
    return found


def test_gateway_pod_config_listens_on_exactly_its_three_ports(
    objects: list[dict], tmp_path: Path
) -> None:
    """The gateway pod's config set, run by the real otelcol-soma with the pod's env (its
    SOMA_GATEWAY_* ports moved to free loopback ports, the stack holds 4317/13133/8888), opens
    exactly the OTLP/gRPC, health and own-metrics ports: no HTTP receiver."""
    ((workload, container),) = [
        p for p in _collector_pods(objects) if p[0]["metadata"]["name"] == "otelcol-gateway"
    ]
    env, _ = _pod_env(workload, container, tmp_path)
    data = _by_kind(objects, "ConfigMap")["otelcol-config"]["data"]
    grpc, health, telemetry, closed = free_ports(4)
    env.update(
        SOMA_GATEWAY_OTLP_GRPC=f"127.0.0.1:{grpc}",
        SOMA_GATEWAY_HEALTH=f"127.0.0.1:{health}",
        SOMA_GATEWAY_TELEMETRY_PORT=str(telemetry),
        SOMA_JAEGER_OTLP_ENDPOINT=f"127.0.0.1:{closed}",
        SOMA_ZIPKIN_ENDPOINT=f"http://127.0.0.1:{closed}/api/v2/spans",
    )
    argv = [str(stack_paths().cached("otelcol/*/otelcol-soma")), COLLECTOR_FEATURE_GATES]
    for key in TIER_CONFIGS["otelcol-gateway"]:
        (tmp_path / "config" / key).write_text(data[key])
        argv += ["--config", str(tmp_path / "config" / key)]
    log = (tmp_path / "gateway.log").open("w")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            live.wait_until(lambda: live.serving(process, f"http://127.0.0.1:{health}/"), bool,
                            30, "the gateway pod's collector healthy", interval=0.2)
        except AssertionError as exc:
            tail = (tmp_path / "gateway.log").read_text()[-3000:]
            raise AssertionError(f"{exc}: {tail}") from exc
        ports = {port for _, port in _listening_ports(process.pid)}
        assert ports == {grpc, health, telemetry}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_prometheus_rules_are_the_rule_files(objects: list[dict], tmp_path: Path) -> None:
    loaded = yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"]
    rules = _by_kind(objects, "PrometheusRule")
    assert sorted(rules) == sorted(f"somaagent-{Path(f).stem}" for f in loaded)
    prometheus = _by_kind(objects, "Prometheus")["somaagent"]
    selector = prometheus["spec"]["ruleSelector"]["matchLabels"]
    for f in loaded:
        source = PROMETHEUS_YML.parent / f
        assert not source.name.endswith("_test.yml")
        rule = rules[f"somaagent-{source.stem}"]
        assert rule["apiVersion"] == "monitoring.coreos.com/v1"
        assert selector.items() <= rule["metadata"]["labels"].items()
        groups = rule["spec"]["groups"]
        assert groups == yaml.safe_load(source.read_text())["groups"], f
        out = tmp_path / source.name
        out.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        result = subprocess.run(
            ["promtool", "check", "rules", str(out)], capture_output=True, text=True
        )
        assert result.returncode == 0, f"{f}: {result.stdout}{result.stderr}"


def test_every_container_has_resources_probes_and_runs_as_non_root(objects: list[dict]) -> None:
    for workload in (o for o in objects if o["kind"] in WORKLOADS):
        name = workload["metadata"]["name"]
        pod = _pod_spec(workload)
        init = {c["name"] for c in pod.get("initContainers", [])}
        for c in _containers(workload):
            where = f"{name}/{c['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), where
            if c["name"] not in init:
                assert c.get("readinessProbe") and c.get("livenessProbe"), where
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            if (name, c["name"]) in ROOT_CONTAINERS:
                assert sc["capabilities"].get("add") == ["CHOWN"], where
                continue
            assert sc["runAsNonRoot"] is True and pod["securityContext"]["runAsNonRoot"] is True, (
                where
            )
            assert pod["securityContext"]["runAsUser"] != 0 and sc.get("runAsUser", 1) != 0, where


def test_services_select_pods_and_name_their_ports(objects: list[dict]) -> None:
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    for svc in _by_kind(objects, "Service").values():
        selector = svc["spec"]["selector"]
        pods = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert pods, f"Service {svc['metadata']['name']} selects no pod template"
        ports = {
            p["name"] for w in pods for c in _pod_spec(w)["containers"] for p in c.get("ports", [])
        }
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{svc['metadata']['name']}: {port}"
    for w in workloads:
        assert (
            w["spec"]["selector"]["matchLabels"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        )
    for monitor in _by_kind(objects, "ServiceMonitor").values():
        selector = monitor["spec"]["selector"]["matchLabels"]
        if any(k.startswith("operated-") for k in selector):
            continue  # the operator's own Services (prometheus-operated, alertmanager-operated)
        services = [
            s
            for s in _by_kind(objects, "Service").values()
            if selector.items() <= s["metadata"]["labels"].items()
        ]
        assert services, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        for endpoint in monitor["spec"]["endpoints"]:
            assert any(
                endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in services
            )


def test_gateway_tier_is_behind_a_headless_service(objects: list[dict]) -> None:
    gateway = _by_kind(objects, "StatefulSet")["otelcol-gateway"]
    assert gateway["spec"]["replicas"] >= 2
    headless = _by_kind(objects, "Service")[gateway["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert "volumeClaimTemplates" not in gateway["spec"]  # tail sampling is in memory only
    agent = _by_kind(objects, "DaemonSet")["otelcol-agent"]
    env = {e["name"]: e.get("value") for e in _pod_spec(agent)["containers"][0]["env"]}
    host = f"{headless['metadata']['name']}.somaagent.svc.cluster.local"
    assert env["SOMA_GATEWAY_HEADLESS_HOST"] == host
    assert {p["port"] for p in headless["spec"]["ports"]} == {4317, 8888}
    ports = {
        p["containerPort"]: p.get("hostPort") for p in _pod_spec(agent)["containers"][0]["ports"]
    }
    assert ports[4317] == 4317 and ports[4318] == 4318


def test_services_send_to_their_nodes_agent_with_the_token(objects: list[dict]) -> None:
    deployments = _by_kind(objects, "Deployment")
    assert {n: d["spec"]["replicas"] for n, d in deployments.items()} == {
        "gateway": 2,
        "conversation-worker": 2,
        "tool-executor": 2,
    }
    for name, deployment in deployments.items():
        env = {e["name"]: e for e in _pod_spec(deployment)["containers"][0]["env"]}
        assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://$(NODE_IP):4317"
        assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {
            "name": "otlp-token",
            "key": "otlp-headers",
        }
        assert env["OTEL_SERVICE_NAME"]["value"] == name


def test_kafka_is_three_kraft_nodes_with_replication_three(objects: list[dict]) -> None:
    kafka = _by_kind(objects, "StatefulSet")["kafka"]
    assert kafka["spec"]["replicas"] == 3
    env = {e["name"]: e["value"] for e in _pod_spec(kafka)["containers"][0]["env"]}
    assert (
        env["KAFKA_DEFAULT_REPLICATION_FACTOR"]
        == env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]
        == "3"
    )
    assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert [v.split("@")[0] for v in voters] == ["0", "1", "2"]
    assert all(
        re.fullmatch(rf"{i}@kafka-{i}\.kafka-headless\.somaagent\.svc\.cluster\.local:9093", v)
        for i, v in enumerate(voters)
    )
    assert len(env["CLUSTER_ID"]) == 22


def test_every_reference_exists(objects: list[dict]) -> None:
    configmaps = {n: set(o.get("data", {})) for n, o in _by_kind(objects, "ConfigMap").items()}
    secrets = {
        n: set(o.get("stringData", {})) | set(o.get("data", {}))
        for n, o in _by_kind(objects, "Secret").items()
    }
    secrets.update(EXTERNAL_SECRETS)
    for workload in (o for o in objects if o["kind"] in WORKLOADS):
        name = workload["metadata"]["name"]
        pod = _pod_spec(workload)
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, f"{name}: {v}"
            if "secret" in v:
                secret = v["secret"]["secretName"]
                assert secret in secrets, f"{name}: {v}"
                assert {i["key"] for i in v["secret"].get("items", [])} <= secrets[secret]
        for c in _containers(workload):
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, (
                    f"{name}/{c['name']}: {mount}"
                )
            for ref in c.get("envFrom", []):
                assert ref["configMapRef"]["name"] in configmaps, f"{name}: {ref}"
            for var in c.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["key"] in secrets[ref["secretKeyRef"]["name"]], (
                        f"{name}: {var}"
                    )
                if "configMapKeyRef" in ref:
                    assert (
                        ref["configMapKeyRef"]["key"] in configmaps[ref["configMapKeyRef"]["name"]]
                    )
    for sts in _by_kind(objects, "StatefulSet").values():
        assert sts["spec"]["serviceName"] in _by_kind(objects, "Service")


#: KAFKA_* variables the apache/kafka image's start script does not turn into properties.
_KAFKA_NOT_PROPERTIES = {
    "KAFKA_HEAP_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_LOG4J_OPTS",
}


def _kafka_properties(env: dict[str, str], ordinal: int, log_dir: Path) -> str:
    """server.properties as the image's script derives it from KAFKA_* (KAFKA_A_B -> a.b, `__`
    -> `_`, `___` -> `-`), with the per-pod values the StatefulSet's command exports."""
    env = {
        **env,
        "KAFKA_NODE_ID": str(ordinal),
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://kafka-{ordinal}.kafka-headless"
        ".somaagent.svc.cluster.local:9092",
        "KAFKA_LOG_DIRS": str(log_dir),
    }
    lines = []
    for name, value in sorted(env.items()):
        if not name.startswith("KAFKA_") or name in _KAFKA_NOT_PROPERTIES:
            continue
        key = name[len("KAFKA_") :].lower().replace("___", "-").replace("__", "@").replace("_", ".")
        lines.append(f"{key.replace('@', '_')}={value}")
    return "\n".join(lines) + "\n"


def test_kafka_env_is_a_config_kafka_accepts(objects: list[dict], tmp_path: Path) -> None:
    """Kafka's own StorageTool (the local stack's 4.1.1 jars) parses each pod's properties and
    formats its log dir with the StatefulSet's CLUSTER_ID: the KRaft settings are consistent."""
    home = stack_paths().cached("kafka/*/lib").parent
    assert (home / "lib").is_dir(), f"no Kafka jars at {home} (run stack/stack up once)"
    kafka = _by_kind(objects, "StatefulSet")["kafka"]
    env = {e["name"]: e["value"] for e in _pod_spec(kafka)["containers"][0]["env"]}
    assert kafka["spec"]["template"]["spec"]["containers"][0]["image"] == "apache/kafka:4.1.1"
    for ordinal in range(kafka["spec"]["replicas"]):
        log_dir = tmp_path / f"kafka-{ordinal}"
        props = tmp_path / f"kafka-{ordinal}.properties"
        props.write_text(_kafka_properties(env, ordinal, log_dir))
        result = subprocess.run(
            [
                "java",
                "-cp",
                f"{home / 'lib'}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                env["CLUSTER_ID"],
                "-c",
                str(props),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"kafka-{ordinal}: {result.stdout}{result.stderr}"
        meta = (log_dir / "meta.properties").read_text()
        assert f"node.id={ordinal}" in meta and f"cluster.id={env['CLUSTER_ID']}" in meta
