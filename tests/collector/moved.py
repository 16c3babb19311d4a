"""A second ``otelcol-soma`` beside the stack's: config.yaml with every port moved.

``moved_ports()`` returns an overlay (merged over config.yaml by a second ``--config``: the
collector deep-merges maps) that moves the receivers, health check, own telemetry and
Prometheus exporter to free ports of 127.0.0.1 and points every backend exporter (Jaeger,
Zipkin, VictoriaLogs) at a closed port, so the test collector never writes into the stack's
stores; and the ports by name.
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["free_ports", "moved_ports"]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports of 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def moved_ports() -> tuple[dict[str, Any], dict[str, int]]:
    """The overlay moving config.yaml's ports, and the ports it uses, by name."""
    names = ("grpc", "http", "health", "telemetry", "prometheus", "closed")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    closed = f"127.0.0.1:{ports['closed']}"
    overlay = {
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{ports['health']}"}},
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{ports['grpc']}"},
            "http": {"endpoint": f"127.0.0.1:{ports['http']}"},
        }}},
        "exporters": {
            "prometheus": {"endpoint": f"127.0.0.1:{ports['prometheus']}"},
            "otlp_grpc/jaeger": {"endpoint": closed},
            "zipkin": {"endpoint": f"http://{closed}/api/v2/spans"},
            "otlp_http/victorialogs": {"logs_endpoint": f"http://{closed}/v1/logs"},
        },
        "service": {"telemetry": {"metrics": {"readers": [{"pull": {"exporter": {
            "prometheus": {"host": "127.0.0.1", "port": ports["telemetry"]}}}}]}}},
    }
    return overlay, ports
