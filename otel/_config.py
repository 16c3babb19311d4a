"""Every setting of :func:`otel.configure`, declared once: keyword, environment variables, type,
default, and a strict parser.

Precedence for each setting: the keyword argument of ``configure()`` if not ``None``, else the
first environment variable of its row that is set (standard ``OTEL_*`` variables first), else the
default. A value that cannot be parsed raises :class:`ConfigurationError` naming the variable: a
service must not start exporting to the wrong place, or not at all, because of a typo.

The per-signal variants (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and friends) are deliberately not
read: SomaAgent sends all three signals to one collector. ``docs/setup.md`` lists the same table.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from opentelemetry.semconv.attributes.service_attributes import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
)

__all__ = [
    "INSTRUMENTATION_NAMES",
    "LEAN_INSTRUMENTATION_SETTING",
    "SETTINGS",
    "ConfigurationError",
    "ExporterKind",
    "Protocol",
    "Setting",
    "Settings",
    "parse_headers",
    "parse_resource_attributes",
    "resolve_settings",
]

T = TypeVar("T")

Protocol = Literal["grpc", "http/protobuf"]
ExporterKind = Literal["otlp", "console", "none"]

#: Libraries that standalone ``configure()`` instruments (names as in
#: ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``, which the distro reads too).
INSTRUMENTATION_NAMES: tuple[str, ...] = ("aiokafka", "asyncpg", "fastapi", "httpx", "redis")

_PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")
_EXPORTER_KINDS: tuple[ExporterKind, ...] = ("otlp", "console", "none")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DEFAULT_ENDPOINTS: Mapping[Protocol, str] = {
    "grpc": "http://localhost:4317",
    "http/protobuf": "http://localhost:4318",
}


class ConfigurationError(ValueError):
    """A setting of :func:`otel.configure` has a value that cannot be used."""


# ---------------------------------------------------------------------------------- parsers


def _parse_str(var: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigurationError(f"{var} is set but empty")
    return value


def _parse_protocol(var: str, raw: str) -> Protocol:
    value = raw.strip()
    for protocol in _PROTOCOLS:
        if value == protocol:
            return protocol
    raise ConfigurationError(
        f"{var}={raw!r} is not a supported OTLP protocol; use one of {', '.join(_PROTOCOLS)}"
    )


def _parse_exporter(var: str, raw: str) -> ExporterKind:
    value = raw.strip().lower()
    for kind in _EXPORTER_KINDS:
        if value == kind:
            return kind
    raise ConfigurationError(
        f"{var}={raw!r} is not supported; use one of {', '.join(_EXPORTER_KINDS)}"
    )


def _parse_endpoint(var: str, raw: str) -> str:
    value = raw.strip()
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(
            f"{var}={raw!r} is not an http:// or https:// URL with a host"
        )
    try:
        parsed.port  # noqa: B018 - raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ConfigurationError(f"{var}={raw!r} has an invalid port: {exc}") from None
    return value.rstrip("/")


def _parse_millis(var: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigurationError(
            f"{var}={raw!r} is not a whole number of milliseconds"
        ) from None
    if value <= 0:
        raise ConfigurationError(f"{var}={raw!r} must be a positive number of milliseconds")
    return value


def _parse_bool(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ConfigurationError(f"{var}={raw!r} is not a boolean; use true or false")


def _parse_log_level(var: str, raw: str) -> str:
    value = raw.strip().upper()
    if value == "WARN":
        value = "WARNING"
    if value not in _LOG_LEVELS:
        raise ConfigurationError(f"{var}={raw!r} is not a log level; use one of {_LOG_LEVELS}")
    return value


def _parse_key_values(var: str, raw: str, what: str) -> dict[str, str]:
    """Parse the W3C-baggage-like ``k1=v1,k2=v2`` list with percent-encoded values."""
    result: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = urllib.parse.unquote(key.strip())
        if not sep or not key:
            raise ConfigurationError(
                f"{var} has a malformed {what} {item.strip()!r}; expected key=value pairs "
                "separated by commas"
            )
        result[key] = urllib.parse.unquote(value.strip())
    return result


def parse_headers(var: str, raw: str) -> dict[str, str]:
    """Parse ``OTEL_EXPORTER_OTLP_HEADERS``; header names are lower-cased as gRPC requires."""
    headers = _parse_key_values(var, raw, "header")
    for key in headers:
        if any(ch.isspace() for ch in key):
            raise ConfigurationError(f"{var} has a header name with whitespace: {key!r}")
    return {key.lower(): value for key, value in headers.items()}


def parse_resource_attributes(var: str, raw: str) -> dict[str, str]:
    """Parse ``OTEL_RESOURCE_ATTRIBUTES``."""
    return _parse_key_values(var, raw, "attribute")


def _parse_names(var: str, raw: str) -> frozenset[str]:
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


# --------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One row of the settings table."""

    keyword: str
    env: tuple[str, ...]
    parse: Callable[[str, str], T]
    default: T
    doc: str

    def resolve(self, explicit: T | None, environ: Mapping[str, str]) -> T:
        """Return the explicit value, else the first set environment variable, else the default."""
        if explicit is not None:
            return explicit
        for var in self.env:
            raw = environ.get(var)
            if raw is not None:
                return self.parse(var, raw)
        return self.default


SERVICE_NAME_SETTING: Setting[str | None] = Setting(
    "service_name", ("OTEL_SERVICE_NAME",), _parse_str, None,
    "service.name, also the Prometheus job label; required",
)
ENVIRONMENT_SETTING: Setting[str] = Setting(
    "environment", ("SOMA_AGENT_MODE",), _parse_str, "LOCAL", "deployment.environment",
)
RESOURCE_ATTRIBUTES_SETTING: Setting[dict[str, str]] = Setting(
    "resource_attributes", ("OTEL_RESOURCE_ATTRIBUTES",), parse_resource_attributes, {},
    "extra resource attributes; service.version and service.instance.id are read from here "
    "when not given as keywords",
)
PROTOCOL_SETTING: Setting[Protocol] = Setting(
    "protocol", ("OTEL_EXPORTER_OTLP_PROTOCOL",), _parse_protocol, "grpc",
    "OTLP transport (grpc is also the distro's default)",
)
ENDPOINT_SETTING: Setting[str | None] = Setting(
    "endpoint", ("OTEL_EXPORTER_OTLP_ENDPOINT",), _parse_endpoint, None,
    "collector base URL; default http://localhost:4317 (grpc) or http://localhost:4318 (http)",
)
HEADERS_SETTING: Setting[dict[str, str]] = Setting(
    "headers", ("OTEL_EXPORTER_OTLP_HEADERS",), parse_headers, {},
    "headers sent with every export",
)
EXPORT_TIMEOUT_SETTING: Setting[int] = Setting(
    "export_timeout_millis", ("OTEL_EXPORTER_OTLP_TIMEOUT",), _parse_millis, 10_000,
    "timeout of one OTLP export",
)
TRACES_EXPORTER_SETTING: Setting[ExporterKind] = Setting(
    "traces_exporter", ("OTEL_TRACES_EXPORTER",), _parse_exporter, "otlp", "span exporter",
)
METRICS_EXPORTER_SETTING: Setting[ExporterKind] = Setting(
    "metrics_exporter", ("OTEL_METRICS_EXPORTER",), _parse_exporter, "otlp", "metric exporter",
)
LOGS_EXPORTER_SETTING: Setting[ExporterKind] = Setting(
    "logs_exporter", ("OTEL_LOGS_EXPORTER",), _parse_exporter, "otlp", "log record exporter",
)
METRIC_INTERVAL_SETTING: Setting[int] = Setting(
    "metric_export_interval_millis", ("OTEL_METRIC_EXPORT_INTERVAL",), _parse_millis, 60_000,
    "period of the metric reader",
)
METRIC_TIMEOUT_SETTING: Setting[int] = Setting(
    "metric_export_timeout_millis", ("OTEL_METRIC_EXPORT_TIMEOUT",), _parse_millis, 30_000,
    "timeout of one metric collection and export",
)
SPAN_DELAY_SETTING: Setting[int] = Setting(
    "span_schedule_delay_millis", ("OTEL_BSP_SCHEDULE_DELAY",), _parse_millis, 5_000,
    "delay between two span batch exports",
)
LOG_DELAY_SETTING: Setting[int] = Setting(
    "log_schedule_delay_millis", ("OTEL_BLRP_SCHEDULE_DELAY",), _parse_millis, 1_000,
    "delay between two log batch exports",
)
DISABLED_INSTRUMENTATIONS_SETTING: Setting[frozenset[str]] = Setting(
    "disabled_instrumentations", ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",), _parse_names,
    frozenset(), "libraries standalone mode must not instrument (of " +
    ", ".join(INSTRUMENTATION_NAMES) + ")",
)
LOG_LEVEL_SETTING: Setting[str] = Setting(
    "log_level", ("SOMA_LOG_LEVEL",), _parse_log_level, "INFO", "level of the root logger",
)
JSON_LOGS_SETTING: Setting[bool] = Setting(
    "json_logs", ("SOMA_LOG_JSON",), _parse_bool, True,
    "write one JSON object per log record to stdout",
)

LEAN_INSTRUMENTATION_SETTING: Setting[bool] = Setting(
    "lean_instrumentation", ("SOMA_LEAN_INSTRUMENTATION",), _parse_bool, True,
    "use the library's lean FastAPI/Redis/Kafka instrumentation and span encoder where "
    "otel._compat verified the installed versions; false keeps the contrib's",
)

SETTINGS: tuple[Setting[object], ...] = (  # type: ignore[assignment]
    SERVICE_NAME_SETTING,
    ENVIRONMENT_SETTING,
    RESOURCE_ATTRIBUTES_SETTING,
    PROTOCOL_SETTING,
    ENDPOINT_SETTING,
    HEADERS_SETTING,
    EXPORT_TIMEOUT_SETTING,
    TRACES_EXPORTER_SETTING,
    METRICS_EXPORTER_SETTING,
    LOGS_EXPORTER_SETTING,
    METRIC_INTERVAL_SETTING,
    METRIC_TIMEOUT_SETTING,
    SPAN_DELAY_SETTING,
    LOG_DELAY_SETTING,
    DISABLED_INSTRUMENTATIONS_SETTING,
    LOG_LEVEL_SETTING,
    JSON_LOGS_SETTING,
    LEAN_INSTRUMENTATION_SETTING,
)


@dataclass(frozen=True)
class Settings:
    """The resolved configuration (what ``configure()`` acts on)."""

    service_name: str
    service_version: str
    service_instance_id: str
    environment: str
    resource_attributes: Mapping[str, str]
    protocol: Protocol
    endpoint: str
    headers: Mapping[str, str]
    export_timeout_millis: int
    traces_exporter: ExporterKind
    metrics_exporter: ExporterKind
    logs_exporter: ExporterKind
    metric_export_interval_millis: int
    metric_export_timeout_millis: int
    span_schedule_delay_millis: int
    log_schedule_delay_millis: int
    disabled_instrumentations: frozenset[str]
    log_level: int
    json_logs: bool
    lean_instrumentation: bool

    def signal_endpoint(self, signal: Literal["traces", "metrics", "logs"]) -> str:
        """The URL one exporter sends to: the base URL for gRPC, ``<base>/v1/<signal>`` for HTTP."""
        if self.protocol == "grpc":
            return self.endpoint
        return f"{self.endpoint}/v1/{signal}"


def resolve_settings(
    *,
    environ: Mapping[str, str] | None = None,
    service_name: str | None = None,
    service_version: str | None = None,
    service_instance_id: str | None = None,
    environment: str | None = None,
    protocol: Protocol | None = None,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    traces_exporter: ExporterKind | None = None,
    metrics_exporter: ExporterKind | None = None,
    logs_exporter: ExporterKind | None = None,
    metric_export_interval_millis: int | None = None,
    log_level: str | None = None,
    json_logs: bool | None = None,
    new_instance_id: Callable[[], str],
) -> Settings:
    """Resolve every setting (keyword > environment > default); raise ConfigurationError."""
    env = os.environ if environ is None else environ
    resource_attributes = RESOURCE_ATTRIBUTES_SETTING.resolve(None, env)
    name = SERVICE_NAME_SETTING.resolve(service_name, env) or resource_attributes.get(SERVICE_NAME)
    if not name:
        raise ConfigurationError(
            "service name missing: pass configure(service_name=...) or set OTEL_SERVICE_NAME"
        )
    resolved_protocol = PROTOCOL_SETTING.resolve(protocol, env)
    resolved_endpoint = ENDPOINT_SETTING.resolve(
        None if endpoint is None else _parse_endpoint("endpoint", endpoint), env
    )
    return Settings(
        service_name=name,
        service_version=service_version or resource_attributes.get(SERVICE_VERSION) or "unknown",
        service_instance_id=(
            service_instance_id
            or resource_attributes.get(SERVICE_INSTANCE_ID)
            or new_instance_id()
        ),
        environment=ENVIRONMENT_SETTING.resolve(environment, env),
        resource_attributes=resource_attributes,
        protocol=resolved_protocol,
        endpoint=resolved_endpoint or _DEFAULT_ENDPOINTS[resolved_protocol],
        headers=HEADERS_SETTING.resolve(None if headers is None else dict(headers), env),
        export_timeout_millis=EXPORT_TIMEOUT_SETTING.resolve(None, env),
        traces_exporter=TRACES_EXPORTER_SETTING.resolve(traces_exporter, env),
        metrics_exporter=METRICS_EXPORTER_SETTING.resolve(metrics_exporter, env),
        logs_exporter=LOGS_EXPORTER_SETTING.resolve(logs_exporter, env),
        metric_export_interval_millis=METRIC_INTERVAL_SETTING.resolve(
            metric_export_interval_millis, env
        ),
        metric_export_timeout_millis=METRIC_TIMEOUT_SETTING.resolve(None, env),
        span_schedule_delay_millis=SPAN_DELAY_SETTING.resolve(None, env),
        log_schedule_delay_millis=LOG_DELAY_SETTING.resolve(None, env),
        disabled_instrumentations=DISABLED_INSTRUMENTATIONS_SETTING.resolve(None, env),
        log_level=logging.getLevelName(
            LOG_LEVEL_SETTING.resolve(
                None if log_level is None else _parse_log_level("log_level", log_level), env
            )
        ),
        json_logs=JSON_LOGS_SETTING.resolve(json_logs, env),
        lean_instrumentation=LEAN_INSTRUMENTATION_SETTING.resolve(None, env),
    )
