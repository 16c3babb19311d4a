"""Which upstream versions the lean modules were verified against, and the check that uses them.

Why
    :mod:`otel._fastapi`, :mod:`otel._redis`, :mod:`otel._aiokafka`, :mod:`otel._sdk` and
    :mod:`otel._otlp` replace parts of the OpenTelemetry SDK and of the contrib
    instrumentations, and read names those packages do not promise to keep: private fields of
    SDK spans and tracers (``_attributes``, ``_span_processor``, ``_tracer_metrics``...), the
    contrib's ``_semconv`` helpers, redis-py's pipeline internals (``_execution_strategy``,
    ``command_stack``), aiokafka's ``_partition`` step and client fields, the SDK exporters'
    ``_client``/``_metrics``. Each was checked, by ``tests/unit`` and on the live stack, with
    the versions pinned in ``requirements.lock``. A newer minor release may rename any of them,
    and the failure would show as missing or wrong spans, not as an error. So each lean module
    is used only with the versions it was verified against.

The table (:data:`VERIFIED`)
    For each module, the distributions it depends on with a range: from the pinned version's
    minor release (inclusive) to the next minor (exclusive), e.g. ``opentelemetry-sdk
    >=1.45,<1.46`` for the pinned 1.45.1. Patch releases are accepted; pre-releases and local
    builds compare by their release number (``0.66b1`` is in ``>=0.66,<0.67``). A distribution
    is *required* when the module cannot work without it (redis-py for :mod:`otel._redis`) and
    *optional* when the module only touches it if it is there (the contrib FastAPI
    instrumentation, whose middleware :mod:`otel._fastapi` removes from apps it instrumented).

:func:`lean_supported`
    ``lean_supported("fastapi" | "redis" | "aiokafka" | "sdk" | "otlp")`` is True when every
    installed distribution of the module's row is within its range and every required one is
    installed. Outside a range it returns False and logs one WARNING on the ``otel`` logger
    naming the distribution, its installed version and the verified range; the caller then
    uses the SDK's or the contrib's code, which makes the spans the lean module would have
    made, at their CPU cost. A required distribution that is not installed makes the module
    unsupported without a warning (the library it instruments is absent, so there is nothing
    to instrument). An unknown module name is unsupported (no lean module of that name).
    Results are cached per process; :func:`reset` clears the cache (tests).

Who calls it
    :mod:`otel._setup` for FastAPI, Redis, aiokafka and the span encoder (together with
    ``SOMA_LEAN_INSTRUMENTATION``, see :mod:`otel._config`); :func:`otel._sdk.start_span` for
    the lean span construction (outside its range it calls ``Tracer.start_span``).

Raising the pins
    After upgrading a pinned distribution to a new minor, run ``tests/unit`` (in particular
    ``test_sdk.py``, ``test_otlp.py``, ``test_lean_equivalence.py``) and the Kafka tests, fix
    what changed, then move the range here to the new minor.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Literal, NamedTuple

from packaging.version import InvalidVersion, Version

__all__ = [
    "MODULES",
    "VERIFIED",
    "LeanModule",
    "Verified",
    "installed_version",
    "lean_supported",
    "reset",
]

LeanModule = Literal["fastapi", "redis", "aiokafka", "sdk", "otlp"]

_LOG = logging.getLogger("otel")


class Verified(NamedTuple):
    """One distribution a lean module depends on, and the versions it was verified with."""

    distribution: str
    lower: str  #: inclusive
    upper: str  #: exclusive
    required: bool = True

    @property
    def range(self) -> str:
        return f">={self.lower},<{self.upper}"

    def contains(self, version: str) -> bool:
        """Whether ``version``'s release number is in the range (``0.66b1`` -> ``0.66``)."""
        try:
            release = Version(Version(version).base_version)
        except InvalidVersion:
            return False
        return Version(self.lower) <= release < Version(self.upper)


_API = Verified("opentelemetry-api", "1.45", "1.46")
_SDK = Verified("opentelemetry-sdk", "1.45", "1.46")
_SEMCONV = Verified("opentelemetry-semantic-conventions", "0.66", "0.67")
_INSTRUMENTATION = Verified("opentelemetry-instrumentation", "0.66", "0.67")

#: module -> the distributions it was verified against (pins: requirements.lock).
VERIFIED: Mapping[str, tuple[Verified, ...]] = {
    "fastapi": (
        Verified("fastapi", "0.165", "0.166"),
        Verified("starlette", "1.10", "1.11"),
        _API,
        _SEMCONV,
        _INSTRUMENTATION,  # the _semconv opt-in helper and its attribute setters
        Verified("opentelemetry-util-http", "0.66", "0.67"),
        Verified("opentelemetry-instrumentation-fastapi", "0.66", "0.67", required=False),
    ),
    "redis": (
        Verified("redis", "8.1", "8.2"),
        _API,
        _SEMCONV,
        _INSTRUMENTATION,
    ),
    "aiokafka": (
        Verified("aiokafka", "0.14", "0.15"),
        # the lean wrappers replace the contrib's and restore them
        Verified("opentelemetry-instrumentation-aiokafka", "0.66", "0.67"),
        _API,
        _SEMCONV,
    ),
    "sdk": (_SDK, _API),
    "otlp": (
        _SDK,
        Verified("opentelemetry-proto", "1.45", "1.46"),
        Verified("opentelemetry-exporter-otlp-proto-grpc", "1.45", "1.46"),
        Verified("opentelemetry-exporter-otlp-proto-http", "1.45", "1.46"),
        Verified("protobuf", "7.36", "7.37"),
    ),
}
MODULES: tuple[str, ...] = tuple(VERIFIED)


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``; None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def lean_supported(module: str) -> bool:
    """Whether the lean ``module`` may be used with the installed versions (see the module
    docstring); False and one warning when a distribution is outside its verified range."""
    rows = VERIFIED.get(module)
    if rows is None:
        return False
    for row in rows:
        version = installed_version(row.distribution)
        if version is None:
            if row.required:
                return False
            continue
        if not row.contains(version):
            _LOG.warning(
                "lean %s module disabled: %s %s is installed, the module was verified with "
                "%s%s; using the upstream implementation instead",
                module, row.distribution, version, row.distribution, row.range)
            return False
    return True


def reset() -> None:
    """Forget the cached results (for tests)."""
    lean_supported.cache_clear()
