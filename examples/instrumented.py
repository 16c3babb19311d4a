"""Instrumented mode: ``opentelemetry-instrument`` installs the SDK, the library adds its parts.

Run from the repository root, with the collector listening::

    OTEL_SERVICE_NAME=example-instrumented \
    OTEL_RESOURCE_ATTRIBUTES=service.version=0.1.0,deployment.environment=LOCAL \
    OTEL_SEMCONV_STABILITY_OPT_IN=http \
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \
    .venv/bin/opentelemetry-instrument .venv/bin/python -m examples.instrumented

Without a collector, ``OTEL_TRACES_EXPORTER=console`` (and the same for metrics and logs) makes
the distro print what it would send. Prints the mode and trace id on stderr.
"""

from __future__ import annotations

import sys

import otel
from examples import _workload


def main() -> None:
    telemetry = otel.configure()  # service name etc. come from the distro's resource
    try:
        trace_id = _workload.run()
    finally:
        telemetry.shutdown()
    print(f"mode={telemetry.mode} trace_id={trace_id}", file=sys.stderr)


if __name__ == "__main__":
    main()
