"""Settings resolution of otel.configure(): precedence, defaults, strict parsing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from otel._config import SETTINGS, ConfigurationError, Settings, resolve_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "setup.md"


def _resolve(environ: dict[str, str], **kwargs: object) -> Settings:
    return resolve_settings(environ=environ, new_instance_id=lambda: "generated-id", **kwargs)  # type: ignore[arg-type]


def test_defaults_apply_when_only_the_service_name_is_set() -> None:
    """With only OTEL_SERVICE_NAME set, every other setting has its documented default."""
    s = _resolve({"OTEL_SERVICE_NAME": "gateway"})
    assert (s.service_name, s.service_version, s.service_instance_id, s.environment) == (
        "gateway", "unknown", "generated-id", "LOCAL",
    )
    assert (s.protocol, s.endpoint, dict(s.headers)) == ("grpc", "http://localhost:4317", {})
    assert (s.traces_exporter, s.metrics_exporter, s.logs_exporter) == ("otlp", "otlp", "otlp")
    assert (s.export_timeout_millis, s.metric_export_interval_millis) == (10_000, 60_000)
    assert (s.metric_export_timeout_millis, s.span_schedule_delay_millis) == (30_000, 5_000)
    assert (s.log_schedule_delay_millis, s.log_level, s.json_logs) == (1_000, 20, True)
    assert s.disabled_instrumentations == frozenset()


def test_keyword_argument_overrides_environment_variable() -> None:
    """A keyword given to configure() wins over the environment variable of the same setting."""
    env = {"OTEL_SERVICE_NAME": "from-env", "SOMA_AGENT_MODE": "PROD",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_METRIC_EXPORT_INTERVAL": "5000"}
    s = _resolve(env, service_name="gateway", environment="TEST", protocol="http/protobuf",
                 metric_export_interval_millis=15_000)
    assert (s.service_name, s.environment, s.protocol, s.metric_export_interval_millis) == (
        "gateway", "TEST", "http/protobuf", 15_000,
    )


def test_environment_variables_are_read_when_no_keyword_is_given() -> None:
    """Each standard variable sets its setting."""
    env = {
        "OTEL_SERVICE_NAME": "tool-executor",
        "SOMA_AGENT_MODE": "PROD",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "X-Tenant=acme,Authorization=Basic%20abc%3D",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_METRIC_EXPORT_INTERVAL": "15000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_LOGS_EXPORTER": "NONE",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "redis, asyncpg",
        "SOMA_LOG_LEVEL": "warn",
        "SOMA_LOG_JSON": "false",
    }
    s = _resolve(env)
    assert (s.service_name, s.environment, s.protocol) == ("tool-executor", "PROD", "http/protobuf")
    assert s.endpoint == "http://127.0.0.1:4318"
    assert dict(s.headers) == {"x-tenant": "acme", "authorization": "Basic abc="}
    assert (s.export_timeout_millis, s.metric_export_interval_millis) == (2_500, 15_000)
    assert (s.span_schedule_delay_millis, s.log_schedule_delay_millis) == (200, 100)
    assert (s.traces_exporter, s.metrics_exporter, s.logs_exporter) == ("console", "otlp", "none")
    assert s.disabled_instrumentations == frozenset({"redis", "asyncpg"})
    assert (s.log_level, s.json_logs) == (30, False)


def test_http_protocol_sends_each_signal_to_its_v1_path() -> None:
    """Over http/protobuf the exporters get <endpoint>/v1/<signal>; over gRPC the bare endpoint."""
    http = _resolve({"OTEL_SERVICE_NAME": "g", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert [http.signal_endpoint(s) for s in ("traces", "metrics", "logs")] == [
        "http://localhost:4318/v1/traces",
        "http://localhost:4318/v1/metrics",
        "http://localhost:4318/v1/logs",
    ]
    grpc = _resolve({"OTEL_SERVICE_NAME": "g"})
    assert grpc.signal_endpoint("traces") == "http://localhost:4317"


def test_resource_attributes_supply_version_instance_and_name() -> None:
    """OTEL_RESOURCE_ATTRIBUTES provides service.version, service.instance.id and the name."""
    s = _resolve({"OTEL_RESOURCE_ATTRIBUTES":
                  "service.name=gateway,service.version=1.2.3,service.instance.id=gw-1,team=core"})
    assert (s.service_name, s.service_version, s.service_instance_id) == (
        "gateway", "1.2.3", "gw-1",
    )
    assert dict(s.resource_attributes)["team"] == "core"


def test_missing_service_name_is_an_error() -> None:
    """Without a service name anywhere, resolution fails naming both ways to give one."""
    with pytest.raises(ConfigurationError, match="OTEL_SERVICE_NAME"):
        _resolve({})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "not a supported OTLP protocol"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317", "not an http:// or https:// URL"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:43x7", "invalid port"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key", "malformed header 'api-key'"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "bad name=1", "header name with whitespace"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "not a whole number of milliseconds"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "ten", "not a whole number of milliseconds"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "0", "must be a positive number"),
        ("OTEL_BSP_SCHEDULE_DELAY", "-5", "must be a positive number"),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.version", "malformed attribute"),
        ("OTEL_TRACES_EXPORTER", "jaeger", "is not supported"),
        ("SOMA_LOG_LEVEL", "LOUD", "not a log level"),
        ("SOMA_LOG_JSON", "maybe", "not a boolean"),
        ("SOMA_AGENT_MODE", "  ", "set but empty"),
    ],
)
def test_bad_environment_value_error_names_the_variable(
    variable: str, value: str, message: str
) -> None:
    """An unusable value raises ConfigurationError that starts with the variable's name."""
    with pytest.raises(ConfigurationError) as caught:
        _resolve({"OTEL_SERVICE_NAME": "gateway", variable: value})
    assert str(caught.value).startswith(f"{variable}=") or str(caught.value).startswith(
        f"{variable} "
    )
    assert message in str(caught.value)


def test_every_environment_variable_is_documented_in_setup_md() -> None:
    """docs/setup.md's table lists exactly the variables of the settings table."""
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", DOCS.read_text(), flags=re.MULTILINE))
    declared = {var for setting in SETTINGS for var in setting.env}
    assert documented == declared | {"OTEL_SEMCONV_STABILITY_OPT_IN"}
