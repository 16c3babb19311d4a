"""The OpenTelemetry distro: ``pip install`` the package, run under ``opentelemetry-instrument``.

Usage, for any service (it never has to import the library)::

    pip install 'somaagent-observability[fastapi]'
    OTEL_SERVICE_NAME=router OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
        opentelemetry-instrument python app.py

``opentelemetry-instrument`` finds three entry points of the package (``pyproject.toml``) and
calls them in this order, before the application's first line runs:

``opentelemetry_distro`` -> :class:`SomaDistro`
    Sets the defaults below with ``os.environ.setdefault`` (a variable the user set wins).

``opentelemetry_configurator`` -> :class:`SomaConfigurator`
    The SDK's configurator (providers and OTLP exporters from ``OTEL_*``) with the resource
    attributes every SomaAgent series needs and the SDK would leave out:
    ``service.instance.id`` (a uuid4; the collector makes it the Prometheus ``instance``, so
    that two replicas never write the same series) and ``deployment.environment``
    (``SOMA_AGENT_MODE``, default ``LOCAL``). Attributes in ``OTEL_RESOURCE_ATTRIBUTES`` win.

``opentelemetry_post_instrument`` -> :func:`post_instrument`
    After the contrib instrumentations ran: ``otel.configure()`` in instrumented mode, which adds
    the scrubbing span processor, JSON logs with trace ids on stdout, the scrubbing filter on
    the OTLP log handler, the lean FastAPI/Redis/Kafka instrumentation and span encoder (where
    :mod:`otel._compat` finds the upstream versions they were verified against and
    ``SOMA_LEAN_INSTRUMENTATION`` is not ``false``), the heartbeat gauge that the
    ``ServiceTelemetryMissing`` alert watches, and a SIGTERM handler that flushes the three
    providers first (:mod:`otel._signals`). A later ``otel.configure()`` in
    the service returns the same :class:`~otel.Telemetry` (adding only its extra processors).
    Nothing here can stop the application: a failure is logged on the ``otel`` logger and the
    service runs with what the SDK configurator installed.

Defaults (:data:`DEFAULTS`)
    ``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER``, ``OTEL_LOGS_EXPORTER`` = ``otlp``;
    ``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``grpc``; ``OTEL_SEMCONV_STABILITY_OPT_IN`` = ``http``
    (the stable HTTP attribute names the collector's spanmetrics dimensions read);
    ``OTEL_METRIC_EXPORT_INTERVAL`` = ``15000`` (the heartbeat's period: the alert fires after
    2 minutes without one, so keep it at 30 s or less); ``OTEL_PYTHON_CONFIGURATOR`` =
    ``somaagent`` (so that this configurator is used when ``opentelemetry-distro`` is installed
    too).

Choosing another distro
    ``opentelemetry-instrument`` uses the first distro it finds unless ``OTEL_PYTHON_DISTRO``
    names one. Where ``opentelemetry-distro`` (or another) is installed beside this package, set
    ``OTEL_PYTHON_DISTRO=somaagent``; a process whose ``OTEL_PYTHON_DISTRO`` names another
    distro gets nothing of this package's post-instrument step (its configurator, the SDK's with
    the two resource defaults, is still used unless ``OTEL_PYTHON_CONFIGURATOR`` names another).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.semconv._incubating.attributes.deployment_attributes import (
    DEPLOYMENT_ENVIRONMENT,
)
from opentelemetry.semconv.attributes.service_attributes import SERVICE_INSTANCE_ID

from otel._config import ENVIRONMENT_SETTING, RESOURCE_ATTRIBUTES_SETTING, ConfigurationError

__all__ = ["DEFAULTS", "SomaConfigurator", "SomaDistro", "default_resource", "post_instrument"]

_LOG = logging.getLogger("otel")

DEFAULTS: Final[Mapping[str, str]] = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    "OTEL_METRIC_EXPORT_INTERVAL": "15000",
    "OTEL_PYTHON_CONFIGURATOR": "somaagent",
}


#: Whether ``opentelemetry-instrument`` chose this distro in this process.
_selected = False


class SomaDistro(BaseDistro):  # type: ignore[misc]
    """Sets :data:`DEFAULTS` for every variable the user left unset."""

    def _configure(self, **kwargs: Any) -> None:
        global _selected
        _selected = True
        for var, value in DEFAULTS.items():
            os.environ.setdefault(var, value)


def default_resource(environ: Mapping[str, str]) -> dict[str, str]:
    """The resource attributes the configurator adds: those ``OTEL_RESOURCE_ATTRIBUTES`` lacks."""
    try:
        given = RESOURCE_ATTRIBUTES_SETTING.resolve(None, environ)
        environment = ENVIRONMENT_SETTING.resolve(None, environ)
    except ConfigurationError as exc:
        _LOG.error("%s; the resource gets the library's defaults", exc)
        given, environment = {}, ENVIRONMENT_SETTING.default
    defaults = {SERVICE_INSTANCE_ID: str(uuid.uuid4()), DEPLOYMENT_ENVIRONMENT: environment}
    return {key: value for key, value in defaults.items() if key not in given}


class SomaConfigurator(_OTelSDKConfigurator):
    """The SDK configurator, with :func:`default_resource` added to the resource."""

    def _configure(self, **kwargs: Any) -> None:
        attributes = dict(kwargs.pop("resource_attributes", None) or {})
        attributes.update(default_resource(os.environ))
        super()._configure(resource_attributes=attributes, **kwargs)  # type: ignore[no-untyped-call]


def post_instrument(**kwargs: Any) -> None:
    """Set up what the library owns on the providers the configurator installed (never raises);
    nothing when ``OTEL_PYTHON_DISTRO`` chose another distro."""
    if not _selected:
        return
    from otel._setup import configure_for_distro

    try:
        configure_for_distro()
    except Exception:
        _LOG.exception(
            "somaagent-observability could not set up scrubbing, JSON logs and the heartbeat; "
            "the service runs with the plain OpenTelemetry SDK"
        )
