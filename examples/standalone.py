"""Standalone mode: the library installs the SDK itself.

Run from the repository root, with the collector listening (defaults: gRPC on localhost:4317)::

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 .venv/bin/python -m examples.standalone

Prints the trace id on stderr; find it in Jaeger, the JSON lines on stdout carry it too.
"""

from __future__ import annotations

import sys

import otel
from examples import _workload


def main() -> None:
    telemetry = otel.configure(service_name="example-standalone", service_version="0.1.0")
    try:
        trace_id = _workload.run()
    finally:
        telemetry.shutdown()
    print(f"mode={telemetry.mode} trace_id={trace_id}", file=sys.stderr)


if __name__ == "__main__":
    main()
