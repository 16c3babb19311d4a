"""``otel.configure()``: one call that sets up traces, metrics and logs, in one of two modes.

Distro mode (the package installed, ``opentelemetry-instrument python app.py``)
    :mod:`otel._distro`'s post-instrument hook calls :func:`configure_for_distro`, which is the
    instrumented mode below, before the application runs; the application need not import the
    library. A later ``configure()`` in the application returns that same :class:`Telemetry`
    and only adds its ``additional_span_processors`` and ``additional_log_processors``.

Instrumented mode (``opentelemetry-instrument python -m service``)
    The distro has already installed SDK providers (from ``OTEL_*``) and instrumented the
    libraries. ``configure()`` detects the SDK ``TracerProvider`` and adds only what the library
    owns: the :class:`~otel._scrubbing.ScrubbingSpanProcessor`, the JSON log handler on stdout,
    the scrubbing filter on the OTLP logging handler of ``opentelemetry-instrumentation-logging``
    (or, if that handler is absent, its own), and the root log level. It installs no provider,
    instruments nothing new, and does not change the resource (the SDK's resource is immutable
    once spans exist); it replaces the distro's FastAPI and Redis instrumentations, its Kafka
    producer wrapper and its gRPC span exporter with the lean ones (below); it logs a warning
    when ``service.version``, ``service.instance.id`` or ``deployment.environment`` are
    missing, when the sampler is not parent-based always-on, and when
    ``OTEL_SEMCONV_STABILITY_OPT_IN`` lacks ``http``. Set these through the environment (see
    ``docs/setup.md``).

Standalone mode (``python -m service``)
    ``configure()`` installs a TracerProvider, MeterProvider and LoggerProvider exporting over OTLP
    as the ``OTEL_*`` variables say (:mod:`otel._config`), puts the OTLP logging handler on the
    root logger, sets ``OTEL_SEMCONV_STABILITY_OPT_IN=http`` unless already set, and instruments
    aiokafka, asyncpg, FastAPI, httpx and redis (minus ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``).
    Call it before anything makes spans.

FastAPI, Redis, Kafka clients and span export, lean
    In both modes FastAPI requests get their SERVER span from :mod:`otel._fastapi`, Redis
    commands their CLIENT span from :mod:`otel._redis` (the contrib instrumentations that the
    distro applied are removed) and ``AIOKafkaProducer.send`` its PRODUCER span and
    ``AIOKafkaConsumer.getone``/``getmany`` their CONSUMER spans from :mod:`otel._aiokafka`
    (which also keeps a malformed header from stopping the consumer): the contrib's spans in
    every ``OTEL_SEMCONV_STABILITY_OPT_IN`` mode but for the differences that
    ``docs/conventions.md`` lists, at a fraction of the contrib's CPU (the contrib ASGI
    middleware cost more than the request itself). Spans go out over OTLP through
    :class:`otel._otlp.SpanExporter` (gRPC) or
    :class:`otel._otlp.HttpSpanExporter` (HTTP/protobuf), the SDK exporters with a direct
    protobuf encoder (the reference encoder took about 60 us per span), behind
    :class:`otel._otlp.EncodingBatchSpanProcessor`, which encodes each span as it ends; in
    instrumented mode they replace the distro's OTLP span exporter and its batch processor,
    built from the same ``OTEL_*`` variables. Spans of the library's own instrumentation are
    made by :func:`otel._sdk.start_span` (the SDK's span class, without its generic
    constructor's copies). Figures before and after: ``docs/benchmarks.md``.
    Each lean module is used only where :func:`otel._compat.lean_supported` finds the upstream
    versions it was verified against (outside them: one warning, and the contrib's module) and
    ``SOMA_LEAN_INSTRUMENTATION`` is not ``false`` (then the contrib's everywhere).

Resource
    ``service.name`` (= Prometheus ``job``), ``service.version``, ``service.instance.id`` (a uuid4
    unless given or in ``OTEL_RESOURCE_ATTRIBUTES``; = ``instance``), ``deployment.environment``
    (``SOMA_AGENT_MODE``, default ``LOCAL``). No ``service.namespace``: the collector's
    Prometheus exporter would turn it into ``job="<namespace>/<name>"`` and the spec's rules,
    which select ``job="gateway"``, would match nothing.

Sampling
    Parent-based always-on at the head. The collector's spanmetrics connector derives the spec's
    RED series (request rates, error ratios, latency histograms) from spans; it must see every
    span or the counts would be a sample. The collector's tail sampler then keeps 10% of traces
    (the spec's "10% of requests traced"), plus every trace with an error or
    ``soma.sampling.keep=true``.

Shutdown
    :meth:`Telemetry.shutdown` flushes traces, logs and metrics (standalone: and shuts the
    providers down; it also runs at interpreter exit). It is idempotent. SIGTERM, whose
    default action skips the exit-time flush (and which uvicorn re-raises after its shutdown),
    first flushes the three providers, up to 5 s each, where the process has no handler of its
    own (:mod:`otel._signals`).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Literal, TextIO

from opentelemetry import _logs, metrics, trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler as _InstrLoggingHandler
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs import LoggingHandler as _SdkLoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import DEFAULT_ON
from opentelemetry.semconv._incubating.attributes.deployment_attributes import (
    DEPLOYMENT_ENVIRONMENT,
)
from opentelemetry.semconv.attributes.service_attributes import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
)

from otel import _compat
from otel import _otlp as otlp
from otel import _signals as signals
from otel._config import (
    INSTRUMENTATION_NAMES,
    ConfigurationError,
    ExporterKind,
    Protocol,
    Settings,
    resolve_settings,
)
from otel._instruments import library_instruments
from otel._logging import JsonFormatter, OtlpLoggingHandler, ScrubbingFilter
from otel._scrubbing import ScrubbingSpanProcessor

__all__ = ["Mode", "Telemetry", "configure", "configure_for_distro"]

Mode = Literal["standalone", "instrumented"]
_SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
_LOG = logging.getLogger("otel")

_INSTRUMENTORS: Mapping[str, tuple[str, str]] = {
    "aiokafka": ("otel._aiokafka", "AiokafkaInstrumentor"),
    "asyncpg": ("opentelemetry.instrumentation.asyncpg", "AsyncPGInstrumentor"),
    "fastapi": ("otel._fastapi", ""),
    "httpx": ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    "redis": ("otel._redis", ""),
}
# An empty class name: the library's own module, with instrument(tracer_provider),
# uninstrument() and is_instrumented() functions.
#: The contrib instrumentations that the library's leaner ones above replace (the spans'
#: differences: docs/conventions.md, "Lean instrumentation vs the contrib's spans").
_REPLACED: Mapping[str, tuple[str, str]] = {
    "fastapi": ("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor"),
    "redis": ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
}
#: The contrib instrumentor of every library that has a lean module, for when it is not used
#: (aiokafka's lean module wraps the contrib's instead of replacing it, see _adopt).
_CONTRIB: Mapping[str, tuple[str, str]] = {
    **_REPLACED,
    "aiokafka": ("opentelemetry.instrumentation.aiokafka", "AIOKafkaInstrumentor"),
}

#: How long each provider may take to flush when SIGTERM arrives (:mod:`otel._signals`).
_SIGTERM_FLUSH_MILLIS = 5_000

_state_lock = threading.Lock()
_active: Telemetry | None = None
#: Providers an earlier standalone configure() made global (they can be set once per process).
_owned_providers: list[object] = []


@dataclass
class Telemetry:
    """What :func:`configure` set up; :meth:`shutdown` flushes all three signals."""

    mode: Mode
    settings: Settings
    resource: Resource
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    instrumented: tuple[str, ...] = ()
    #: Set up by the distro's post-instrument hook (:func:`configure_for_distro`).
    by_distro: bool = False
    _applied: list[Any] = field(default_factory=list, repr=False)
    _handlers: list[logging.Handler] = field(default_factory=list, repr=False)
    _filtered: list[logging.Handler] = field(default_factory=list, repr=False)
    _filter: ScrubbingFilter = field(default_factory=ScrubbingFilter, repr=False)
    _shut_down: bool = field(default=False, repr=False)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything buffered in the three providers; True if all succeeded."""
        for handler in self._handlers:
            if not isinstance(handler, _InstrLoggingHandler):
                handler.flush()
        results = (
            self.tracer_provider.force_flush(timeout_millis),
            self.logger_provider.force_flush(timeout_millis),
            self.meter_provider.force_flush(timeout_millis),
        )
        return all(results)

    def shutdown(self) -> None:
        """Flush traces, logs and metrics and detach what configure() added; idempotent.

        Standalone: shuts the three providers down (after which they drop new data) and removes
        the instrumentations it added. Instrumented: flushes the providers, which stay with the
        distro (it shuts them down at exit).
        """
        global _active
        with _state_lock:
            if self._shut_down:
                return
            self._shut_down = True
            if _active is self:
                _active = None
        atexit.unregister(self.shutdown)
        signals.uninstall()
        root = logging.getLogger()
        for handler in self._handlers:
            if not isinstance(handler, _InstrLoggingHandler):
                handler.flush()
            root.removeHandler(handler)
        for handler in self._filtered:
            handler.removeFilter(self._filter)
        if self.mode == "standalone":
            for instrumentor in self._applied:
                instrumentor.uninstrument()
            self.tracer_provider.shutdown()
            self.logger_provider.shutdown()
            self.meter_provider.shutdown()
        else:
            self.tracer_provider.force_flush()
            self.logger_provider.force_flush()
            self.meter_provider.force_flush()


def _instrument(
    instrumentor: Any, name: str, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    """Instrument one library on the given providers."""
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)


def _instrumentor(name: str, lean: bool = True) -> Any:
    """The instrumentor of ``name``: the library's lean one, or with ``lean=False`` the contrib's
    it replaces (the same for libraries the library has no lean module of)."""
    module, cls = _INSTRUMENTORS[name] if lean else _CONTRIB.get(name, _INSTRUMENTORS[name])
    return getattr(import_module(module), cls)() if cls else _Lean(import_module(module))


def _lean(name: str, settings: Settings) -> bool:
    """Whether the library's lean module ``name`` is to be used (setting and version check)."""
    return (name in _compat.VERIFIED and settings.lean_instrumentation
            and _compat.lean_supported(name))


class _Lean:
    """One of the library's instrumentation modules behind the contrib instrumentors' interface."""

    def __init__(self, module: Any) -> None:
        self._module = module

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return bool(self._module.is_instrumented())

    def instrument(self, *, tracer_provider: TracerProvider | None = None, **_: object) -> None:
        self._module.instrument(tracer_provider)

    def uninstrument(self) -> None:
        self._module.uninstrument()


Signal = Literal["traces", "metrics", "logs"]

#: signal -> (console exporter, OTLP exporter module suffix, its class name); the OTLP module is
#: imported from opentelemetry.exporter.otlp.proto.{grpc,http} on first use.
_EXPORTERS: dict[Signal, tuple[type[Any], str, str]] = {
    "traces": (ConsoleSpanExporter, "trace_exporter", "OTLPSpanExporter"),
    "metrics": (ConsoleMetricExporter, "metric_exporter", "OTLPMetricExporter"),
    "logs": (ConsoleLogRecordExporter, "_log_exporter", "OTLPLogExporter"),
}


def _exporter(signal: Signal, kind: ExporterKind, settings: Settings, lean: bool = False) -> Any:
    """The exporter of ``signal``: console, or OTLP over the configured protocol (spans with
    ``lean``: with the library's encoder, :mod:`otel._otlp`)."""
    console, module, cls = _EXPORTERS[signal]
    if kind == "console":
        return console()
    if signal == "traces" and lean:
        span_exporter = otlp.SpanExporter if settings.protocol == "grpc" else otlp.HttpSpanExporter
        return span_exporter(**_otlp_args(settings, signal))
    transport = "grpc" if settings.protocol == "grpc" else "http"
    exporter = getattr(
        import_module(f"opentelemetry.exporter.otlp.proto.{transport}.{module}"), cls)
    return exporter(**_otlp_args(settings, signal))


def _otlp_args(settings: Settings, signal: Signal) -> dict[str, Any]:
    args: dict[str, Any] = {
        "endpoint": settings.signal_endpoint(signal),
        "timeout": settings.export_timeout_millis / 1000,
    }
    # The SDK's exporters read OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS before the generic variable,
    # as the specification says; headers passed here would win over it.
    if f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS" not in os.environ:
        args["headers"] = dict(settings.headers)
    if settings.protocol == "grpc":
        args["insecure"] = settings.endpoint.startswith("http://")
    return args


def _standalone_resource(settings: Settings) -> Resource:
    attributes: dict[str, str] = dict(settings.resource_attributes)
    attributes.update(
        {
            SERVICE_NAME: settings.service_name,
            SERVICE_VERSION: settings.service_version,
            SERVICE_INSTANCE_ID: settings.service_instance_id,
            DEPLOYMENT_ENVIRONMENT: settings.environment,
        }
    )
    return Resource.create(attributes)


def _check_adopted(tracer_provider: TracerProvider, resource: Resource) -> None:
    for key in (SERVICE_VERSION, SERVICE_INSTANCE_ID, DEPLOYMENT_ENVIRONMENT):
        if key not in resource.attributes:
            _LOG.warning(
                "resource attribute %s is missing; set it in OTEL_RESOURCE_ATTRIBUTES "
                "(see docs/setup.md)",
                key,
            )
    sampler: str = tracer_provider.sampler.get_description()
    if sampler != DEFAULT_ON.get_description():  # type: ignore[no-untyped-call]
        _LOG.warning(
            "head sampler is %s, not parent-based always-on: the collector's spanmetrics "
            "would count a sample; unset OTEL_TRACES_SAMPLER",
            sampler,
        )
    if "http" not in os.environ.get(_SEMCONV_OPT_IN, "").split(","):
        _LOG.warning(
            "%s does not include http: HTTP spans carry the old attribute names", _SEMCONV_OPT_IN
        )


def configure(
    *,
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
    log_stream: TextIO | None = None,
    instrumentations: Collection[str] | None = None,
    additional_span_processors: Sequence[SpanProcessor] = (),
    additional_metric_readers: Sequence[MetricReader] = (),
    additional_log_processors: Sequence[LogRecordProcessor] = (),
) -> Telemetry:
    """Set up traces, metrics and logs for one service; see the module docstring.

    Every keyword overrides its environment variable (table in :mod:`otel._config` and
    ``docs/setup.md``). ``log_stream`` is where JSON lines go (default ``sys.stdout``).
    ``instrumentations`` names the libraries standalone mode instruments (default all of
    aiokafka, asyncpg, fastapi, httpx, redis minus ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``).
    The ``additional_*`` processors and readers are added to the providers (span and log
    processors in both modes; metric readers only in standalone mode, since a MeterProvider's
    readers are fixed when it is created). Where the distro already set the process up
    (:func:`configure_for_distro`), the call returns that :class:`Telemetry`, adds only the
    ``additional_*`` processors, and ignores the other keywords (the distro read the same
    settings from the environment).

    Raises :class:`~otel.ConfigurationError` for unusable settings and ``RuntimeError`` when
    called again in the same process without ``shutdown()``, or after a standalone setup (the
    OpenTelemetry global providers can be set only once per process).
    """
    global _active
    with _state_lock:
        if _active is not None and _active.by_distro:
            return _add_to_distro_setup(
                _active, additional_span_processors, additional_metric_readers,
                additional_log_processors)
        if _active is not None:
            raise RuntimeError(
                "otel.configure() was already called; call shutdown() on its Telemetry first"
            )
        current = trace.get_tracer_provider()
        if any(current is owned for owned in _owned_providers):
            raise RuntimeError(
                "an earlier standalone otel.configure() installed the global providers; "
                "OpenTelemetry lets a process set them only once"
            )
        adopted = isinstance(current, TracerProvider)
        tracer_provider_hint = current if isinstance(current, TracerProvider) else None
        resolved_name = service_name
        if resolved_name is None and tracer_provider_hint is not None:
            env_name = os.environ.get("OTEL_SERVICE_NAME")
            resource_name = tracer_provider_hint.resource.attributes.get(SERVICE_NAME)
            resolved_name = env_name or (str(resource_name) if resource_name else None)
        settings = resolve_settings(
            service_name=resolved_name,
            service_version=service_version,
            service_instance_id=service_instance_id,
            environment=environment,
            protocol=protocol,
            endpoint=endpoint,
            headers=headers,
            traces_exporter=traces_exporter,
            metrics_exporter=metrics_exporter,
            logs_exporter=logs_exporter,
            metric_export_interval_millis=metric_export_interval_millis,
            log_level=log_level,
            json_logs=json_logs,
            new_instance_id=lambda: str(uuid.uuid4()),
        )
        telemetry = (
            _adopt(settings, additional_span_processors, additional_metric_readers,
                   additional_log_processors)
            if adopted
            else _install(settings, instrumentations, additional_span_processors,
                          additional_metric_readers, additional_log_processors)
        )
        _configure_logging(telemetry, log_stream)
        library_instruments()  # registers the heartbeat gauge on the MeterProvider now in force
        _active = telemetry
    if telemetry.mode == "standalone":
        atexit.register(telemetry.shutdown)
    signals.install(lambda: telemetry.force_flush(_SIGTERM_FLUSH_MILLIS))
    return telemetry


def configure_for_distro() -> Telemetry:
    """``configure()`` as the distro's post-instrument hook runs it (:mod:`otel._distro`)."""
    telemetry = configure()
    telemetry.by_distro = True
    return telemetry


def _add_to_distro_setup(
    telemetry: Telemetry,
    span_processors: Sequence[SpanProcessor],
    metric_readers: Sequence[MetricReader],
    log_processors: Sequence[LogRecordProcessor],
) -> Telemetry:
    if metric_readers:
        raise ConfigurationError(
            "additional_metric_readers cannot be added to a MeterProvider that already exists "
            "(the distro set this process up)"
        )
    for processor in span_processors:
        telemetry.tracer_provider.add_span_processor(processor)
    for log_processor in log_processors:
        telemetry.logger_provider.add_log_record_processor(log_processor)
    return telemetry


def _adopt(
    settings: Settings,
    span_processors: Sequence[SpanProcessor],
    metric_readers: Sequence[MetricReader],
    log_processors: Sequence[LogRecordProcessor],
) -> Telemetry:
    tracer_provider = trace.get_tracer_provider()
    meter_provider = metrics.get_meter_provider()
    logger_provider = _logs.get_logger_provider()
    assert isinstance(tracer_provider, TracerProvider)
    if not isinstance(meter_provider, MeterProvider) or not isinstance(
        logger_provider, LoggerProvider
    ):
        raise RuntimeError(
            "an SDK TracerProvider is installed but the MeterProvider or LoggerProvider is not "
            "the SDK's; run under opentelemetry-instrument with the distro, or call "
            "otel.configure() before anything installs providers"
        )
    if metric_readers:
        raise ConfigurationError(
            "additional_metric_readers cannot be added to a MeterProvider that already exists "
            "(instrumented mode)"
        )
    tracer_provider.add_span_processor(ScrubbingSpanProcessor())
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    for log_processor in log_processors:
        logger_provider.add_log_record_processor(log_processor)
    for name, (module, cls) in _REPLACED.items():
        if not _lean(name, settings):
            continue
        contrib = getattr(import_module(module), cls)()
        if contrib.is_instrumented_by_opentelemetry:  # the distro's
            contrib.uninstrument()
            _instrumentor(name).instrument(tracer_provider=tracer_provider)
    if _lean("aiokafka", settings):  # imported here: aiokafka is an optional dependency
        import_module("otel._aiokafka").replace_contrib(tracer_provider)  # if the contrib's is on
    if _lean("otlp", settings):
        otlp.adopt(tracer_provider)
    _check_adopted(tracer_provider, tracer_provider.resource)
    return Telemetry(
        mode="instrumented",
        settings=settings,
        resource=tracer_provider.resource,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
    )


def _install(
    settings: Settings,
    instrumentations: Collection[str] | None,
    span_processors: Sequence[SpanProcessor],
    metric_readers: Sequence[MetricReader],
    log_processors: Sequence[LogRecordProcessor],
) -> Telemetry:
    names = (
        [n for n in INSTRUMENTATION_NAMES if n not in settings.disabled_instrumentations]
        if instrumentations is None
        else list(instrumentations)
    )
    unknown = sorted(set(names) - set(INSTRUMENTATION_NAMES))
    if unknown:
        raise ConfigurationError(
            f"unknown instrumentations {unknown}; known: {list(INSTRUMENTATION_NAMES)}"
        )
    os.environ.setdefault(_SEMCONV_OPT_IN, "http")
    resource = _standalone_resource(settings)

    tracer_provider = TracerProvider(sampler=DEFAULT_ON, resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(ScrubbingSpanProcessor())
    if settings.traces_exporter != "none":
        exporter = _exporter("traces", settings.traces_exporter, settings,
                             lean=_lean("otlp", settings))
        batch = (otlp.EncodingBatchSpanProcessor
                 if isinstance(exporter, otlp.SpanExporter | otlp.HttpSpanExporter)
                 else BatchSpanProcessor)
        tracer_provider.add_span_processor(
            batch(
                exporter,
                schedule_delay_millis=settings.span_schedule_delay_millis,
                export_timeout_millis=settings.export_timeout_millis,
            )
        )
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)

    readers: list[MetricReader] = []
    if settings.metrics_exporter != "none":
        readers.append(
            PeriodicExportingMetricReader(
                _exporter("metrics", settings.metrics_exporter, settings),
                export_interval_millis=settings.metric_export_interval_millis,
                export_timeout_millis=settings.metric_export_timeout_millis,
            )
        )
    readers.extend(metric_readers)
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, shutdown_on_exit=False
    )

    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    if settings.logs_exporter != "none":
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                _exporter("logs", settings.logs_exporter, settings),
                schedule_delay_millis=settings.log_schedule_delay_millis,
                export_timeout_millis=settings.export_timeout_millis,
            )
        )
    for log_processor in log_processors:
        logger_provider.add_log_record_processor(log_processor)

    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _logs.set_logger_provider(logger_provider)
    _owned_providers.append(tracer_provider)

    applied: dict[str, Any] = {}
    for name in names:
        try:
            instrumentor = _instrumentor(name, lean=_lean(name, settings))
        except ModuleNotFoundError:  # the library or its instrumentation is not installed
            continue
        if instrumentor.is_instrumented_by_opentelemetry:
            continue
        _instrument(instrumentor, name, tracer_provider, meter_provider)
        if instrumentor.is_instrumented_by_opentelemetry:
            applied[name] = instrumentor
    return Telemetry(
        mode="standalone",
        settings=settings,
        resource=resource,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        instrumented=tuple(applied),
        _applied=list(applied.values()),
    )


def _configure_logging(telemetry: Telemetry, log_stream: TextIO | None) -> None:
    settings = telemetry.settings
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    if settings.json_logs:
        stream_handler = logging.StreamHandler(log_stream or sys.stdout)
        stream_handler.setFormatter(JsonFormatter(settings.service_name))
        stream_handler.addFilter(telemetry._filter)
        root.addHandler(stream_handler)
        telemetry._handlers.append(stream_handler)
    existing = [
        h for h in root.handlers if isinstance(h, _InstrLoggingHandler | _SdkLoggingHandler)
    ]
    if telemetry.mode == "instrumented" and existing:
        for handler in existing:
            handler.addFilter(telemetry._filter)
            telemetry._filtered.append(handler)
        return
    otlp_handler = OtlpLoggingHandler(logger_provider=telemetry.logger_provider)
    otlp_handler.addFilter(telemetry._filter)
    root.addHandler(otlp_handler)
    telemetry._handlers.append(otlp_handler)
