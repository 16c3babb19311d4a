"""The upstream versions each lean module was verified against, checked once at start-up.

The lean modules (:mod:`otel._fastapi`, :mod:`otel._redis`, :mod:`otel._aiokafka`,
:mod:`otel._sdk`, :mod:`otel._otlp`) read private names of the SDK, the contrib instrumentations
and the instrumented libraries. :data:`VERIFIED` lists, per module, the distributions whose
internals it touches and the range its tests ran on (from ``requirements.lock``'s version to the
next minor release, exclusive). :func:`lean_supported` tells :mod:`otel._setup` whether a module
may be used: outside a range it logs one warning on the ``otel`` logger, naming the
distribution, the installed version and the range, and the setup keeps the contrib's module
instead (for ``sdk``, the SDK's own span constructor; for ``otlp``, the SDK's OTLP exporter).
A distribution that is not installed makes the module unsupported without a warning: there is
nothing to instrument. ``SOMA_LEAN_INSTRUMENTATION=false`` (:mod:`otel._config`) turns every
lean module off without a version check.

Widen a range only after the unit and equivalence tests pass on the new version
(``tests/unit/test_lean_equivalence.py`` compares every lean module with the contrib's).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from importlib import metadata
from typing import Final, Literal

from packaging.version import InvalidVersion, Version

__all__ = ["VERIFIED", "LeanModule", "lean_supported", "outside_range"]

LeanModule = Literal["fastapi", "redis", "aiokafka", "sdk", "otlp"]

_LOG = logging.getLogger("otel")

#: The SDK internals every lean module relies on (spans are made by :mod:`otel._sdk`).
_SDK: Final = {"opentelemetry-sdk": ("1.45", "1.46"), "opentelemetry-api": ("1.45", "1.46")}

#: module -> {distribution: (lowest verified version, first version not verified)}.
VERIFIED: Final[Mapping[LeanModule, Mapping[str, tuple[str, str]]]] = {
    "sdk": _SDK,
    "otlp": {**_SDK, "opentelemetry-exporter-otlp-proto-grpc": ("1.45", "1.46"),
             "opentelemetry-exporter-otlp-proto-http": ("1.45", "1.46"),
             "opentelemetry-proto": ("1.45", "1.46"), "protobuf": ("5.0", "8.0")},
    "fastapi": {**_SDK, "opentelemetry-instrumentation-fastapi": ("0.66b0", "0.67"),
                "opentelemetry-util-http": ("0.66b0", "0.67"),
                "fastapi": ("0.110", "1.0"), "starlette": ("0.37", "2.0")},
    "redis": {**_SDK, "opentelemetry-instrumentation-redis": ("0.66b0", "0.67"),
              "redis": ("5.0", "9.0")},
    "aiokafka": {**_SDK, "opentelemetry-instrumentation-aiokafka": ("0.66b0", "0.67"),
                 "aiokafka": ("0.11", "0.15")},
}


def outside_range(module: LeanModule) -> list[str]:
    """What makes ``module`` unusable: one sentence per distribution missing or out of range
    ("missing: NAME" for one not installed)."""
    problems: list[str] = []
    for dist, (low, high) in VERIFIED[module].items():
        try:
            installed = metadata.version(dist)
        except metadata.PackageNotFoundError:
            problems.append(f"missing: {dist}")
            continue
        try:
            ok = Version(low) <= Version(installed) < Version(high)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(f"{dist} {installed} is outside the verified range >={low},<{high}")
    return problems


@functools.cache
def lean_supported(module: LeanModule) -> bool:
    """Whether the lean ``module`` may be used with the installed versions (logged once)."""
    problems = outside_range(module)
    if not problems:
        return True
    if all(problem.startswith("missing: ") for problem in problems):
        return False
    _LOG.warning(
        "the library's lean %s module falls back to the contrib's: %s",
        module, "; ".join(p for p in problems if not p.startswith("missing: ")),
    )
    return False
