"""A local Alertmanager webhook receiver for tests and the demo.

Alertmanager POSTs its webhook payload (version 4) to ``/alerts``; every payload is appended,
one JSON object per line, to the file given as the first argument. ``GET /alerts`` returns
all payloads received as a JSON list, ``DELETE /alerts`` forgets them, ``GET /health``
answers 200. It listens on 127.0.0.1:9095 unless ``ALERT_SINK_PORT`` says otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY_BYTES = 1 << 20


class _Store:
    """The received payloads, kept in a JSON-lines file so that they survive a restart."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def append(self, payload: object) -> None:
        with self._lock, self._path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(payload, separators=(",", ":")) + "\n")

    def all(self) -> list[object]:
        with self._lock:
            lines = self._path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]

    def clear(self) -> None:
        with self._lock:
            self._path.write_text("", encoding="utf-8")


def _handler(store: _Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200, {"status": "ok"})
            elif self.path == "/alerts":
                self._reply(200, store.all())
            else:
                self._reply(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/alerts":
                self._reply(404, {"error": f"no route {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY_BYTES:
                self._reply(413 if length else 400, {"error": "body must be 1 B to 1 MiB"})
                return
            try:
                payload = json.loads(self.rfile.read(length))
            except json.JSONDecodeError as exc:
                self._reply(400, {"error": f"invalid JSON: {exc}"})
                return
            store.append(payload)
            self._reply(200, {"status": "stored"})

        def do_DELETE(self) -> None:
            store.clear()
            self._reply(200, {"status": "cleared"})

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write("alert-sink: " + format % args + "\n")

    return Handler


def main() -> None:
    store = _Store(Path(sys.argv[1]))
    port = int(os.environ.get("ALERT_SINK_PORT", "9095"))
    ThreadingHTTPServer(("127.0.0.1", port), _handler(store)).serve_forever()


if __name__ == "__main__":
    main()
