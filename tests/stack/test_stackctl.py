"""The stack's controller: failures are loud and name the component, its check and its log."""

from __future__ import annotations

import pytest
import yaml

from stack.components import (
    Component,
    components,
    http_check,
    scale_prometheus_config,
    scale_prometheus_config_path,
)
from stack.stackctl import _wait_ready, control, stack_paths


def test_a_component_that_never_gets_ready_is_named_with_its_check_and_log() -> None:
    """Waiting on a component whose check cannot pass reports its name, check and log file."""
    paths = stack_paths()
    ghost = Component(
        "ghost",
        1,
        ["true"],
        http_check("http://127.0.0.1:9/"),
        "GET 127.0.0.1:9/",
        startup_seconds=1,
    )
    (failure,) = _wait_ready(paths, [ghost])
    assert failure.startswith("ghost: check 'GET 127.0.0.1:9/' failed: unreachable")
    assert failure.endswith(f"log: {paths.logs / 'ghost.log'}")


@pytest.mark.usefixtures("stack")
def test_controlling_an_unknown_component_is_refused_with_the_known_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`stack/stack stop NAME` with an unknown name exits 2 and lists the components."""
    assert control("stop", ["no-such-component"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unknown component(s): no-such-component; known: redis, postgres")


def test_an_unknown_profile_is_refused_with_the_known_ones() -> None:
    """Asking for a profile the stack does not have raises naming every profile it has."""
    with pytest.raises(ValueError, match="unknown stack profile 'huge'; known: default, scale"):
        components(stack_paths(), "huge")


def test_the_scale_profile_keeps_every_default_name_and_adds_the_scale_out() -> None:
    """The scale profile holds every default component under its name, plus the second brokers,
    the gateway tier and the consumer replicas, each once."""
    paths = stack_paths()
    default = [c.name for c in components(paths)]
    scale = [c.name for c in components(paths, "scale")]
    assert len(scale) == len(set(scale))
    assert set(scale) - set(default) == {
        "kafka-2",
        "kafka-3",
        "otel-gateway-1",
        "otel-gateway-2",
        "conversation-worker-2",
        "tool-executor-2",
    }
    assert set(default) <= set(scale)


def test_the_scale_profile_starts_the_gateway_tier_before_the_agent_can_export() -> None:
    """Gateway-tier collectors start in the agent's stage and the agent lists them as its
    load-balancing endpoints, one for one."""
    comps = {c.name: c for c in components(stack_paths(), "scale")}
    agent = comps["otel-collector"]
    endpoints = agent.env["SOMA_GATEWAY_HOSTNAMES"].strip("[]").split(",")
    assert endpoints == [comps[f"otel-gateway-{n}"].env["SOMA_GATEWAY_OTLP_GRPC"] for n in (1, 2)]
    assert {comps[f"otel-gateway-{n}"].stage for n in (1, 2)} == {agent.stage}


def test_the_scale_profile_points_every_consumer_at_all_three_brokers() -> None:
    """Every service and replica bootstraps from the three brokers, and each replica has its own
    instance id and health port."""
    comps = components(stack_paths(), "scale")
    services = [c for c in comps if c.stage == 4]
    assert {c.env["KAFKA_BOOTSTRAP_SERVERS"] for c in services} == {
        "127.0.0.1:9092,127.0.0.1:29092,127.0.0.1:39092"
    }
    instances = [c.env["OTEL_RESOURCE_ATTRIBUTES"].rsplit("=", 1)[1] for c in services]
    assert len(instances) == len(set(instances)) == 5
    assert len({c.check_text for c in services}) == 5


def test_the_scale_prometheus_config_scrapes_every_broker_and_gateway_collector() -> None:
    """The generated Prometheus config adds the brokers' and gateway collectors' targets to the
    repository's and loads the same rule files by absolute path."""
    paths = stack_paths()
    (prometheus,) = [c for c in components(paths, "scale") if c.name == "prometheus"]
    assert f"--config.file={scale_prometheus_config_path(paths)}" in prometheus.command
    config = yaml.safe_load(scale_prometheus_config(paths))
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert targets["kafka"] == ["127.0.0.1:9404", "127.0.0.1:9405", "127.0.0.1:9406"]
    assert targets["otel-collector-self"] == ["127.0.0.1:8888", "127.0.0.1:8898", "127.0.0.1:8899"]
    rules = paths.repo / "infra" / "prometheus"
    source = yaml.safe_load((rules / "prometheus.yml").read_text())
    assert config["rule_files"] == [str(rules / r) for r in source["rule_files"]]
