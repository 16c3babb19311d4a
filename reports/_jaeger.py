"""Jaeger's HTTP API as the report reads it: the error traces of a service in a period."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from reports._http import SourceError, get_json

#: The tag search the runbook uses: Jaeger shows spans whose status is ERROR with ``error=true``.
ERROR_TAGS = {"error": "true"}


@dataclass(frozen=True)
class ErrorTrace:
    """One trace with at least one failed span, as the report lists it."""

    trace_id: str
    link: str
    start_us: int
    duration_us: int
    root: str  # "service: operation" of the root span
    span_count: int
    error_spans: int  # failed spans of the service the trace is listed for
    first_error: str  # "service: operation (error.type)" of that service's first failed span


@dataclass(frozen=True)
class ServiceTraces:
    """A service's error traces in the period: how many were found among how many traces
    searched, and the top ones."""

    service: str
    search_url: str
    found: int
    searched: int
    limit: int
    top: tuple[ErrorTrace, ...]


def _tag(span: dict[str, Any], key: str) -> Any:
    return next((t.get("value") for t in span.get("tags") or [] if t.get("key") == key), None)


def _failed(span: dict[str, Any]) -> bool:
    return str(_tag(span, "error")).lower() == "true" or _tag(span, "otel.status_code") == "ERROR"


class Jaeger:
    """A Jaeger query service's HTTP API at ``base``; the links a person opens go to the trace
    UI at ``ui`` (Zipkin Lens, fed the same kept traces: this Jaeger build has no UI)."""

    def __init__(self, base: str, *, ui: str = "http://127.0.0.1:9411/zipkin",
                 timeout: float = 60) -> None:
        self.base = base.rstrip("/")
        self.ui = ui.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str]) -> Any:
        answer = get_json(
            source="Jaeger", base=self.base, path=path, params=params, timeout=self.timeout
        )
        if not isinstance(answer, dict) or answer.get("errors"):
            raise SourceError(f"Jaeger at {self.base} answered {path} with {answer!r:.500}")
        return answer.get("data") or []

    def link(self, trace_id: str) -> str:
        """The trace UI's page of ``trace_id``."""
        return f"{self.ui}/traces/{trace_id}"

    def services(self) -> list[str]:
        """The services Jaeger holds traces of."""
        return sorted(str(s) for s in self._get("/api/services", {}))

    def error_traces(
        self, service: str, *, start_ms: int, end_ms: int, limit: int, top: int
    ) -> ServiceTraces:
        """The traces of the period in which a span of ``service`` failed; keep the ``top``
        longest (ties: the most recent first).

        Two searches, each up to ``limit`` traces, newest first: by the tag ``error=true``, and
        every trace of the service, of which those with a failed span are kept. Jaeger 1.76's
        in-memory store answers the tag search with nothing (it reads the query's ``"true"``,
        a string, as the boolean false), so the second search is the one that finds them
        there; with a store that honours the tag, the first reaches further back.
        """
        params = {
            "service": service,
            "start": str(start_ms * 1000),
            "end": str(end_ms * 1000),
            "limit": str(limit),
        }
        found: dict[str, ErrorTrace] = {}
        searched = 0
        for tags in (ERROR_TAGS, None):
            answer = self._get("/api/traces", params | ({"tags": json.dumps(tags)} if tags else {}))
            if tags is None:
                searched = len(answer)
            for trace in answer:
                summary = self._summary(trace, service)
                if summary is not None:
                    found[summary.trace_id] = summary
        ranked = sorted(found.values(), key=lambda t: (-t.duration_us, -t.start_us, t.trace_id))
        url = f"{self.ui}/?" + urllib.parse.urlencode({
            "serviceName": service, "annotationQuery": "error", "lookback": "range",
            "startTs": str(start_ms), "endTs": str(end_ms), "limit": str(limit)})
        return ServiceTraces(
            service=service, search_url=url, found=len(found), searched=searched, limit=limit,
            top=tuple(ranked[:top]),
        )

    def _summary(self, trace: dict[str, Any], service: str) -> ErrorTrace | None:
        """The trace's summary when a span of ``service`` failed in it, else None."""
        spans: list[dict[str, Any]] = list(trace.get("spans") or [])
        processes: dict[str, Any] = trace.get("processes") or {}

        def service_of(span: dict[str, Any]) -> str:
            return str((processes.get(span.get("processID", "")) or {}).get("serviceName", "?"))

        def name(span: dict[str, Any]) -> str:
            return f"{service_of(span)}: {span.get('operationName', '?')}"

        failed = sorted((s for s in spans if _failed(s) and service_of(s) == service),
                        key=lambda s: int(s["startTime"]))
        if not failed:
            return None
        ids = {s["spanID"] for s in spans}
        roots = [
            s for s in spans
            if not any(r.get("spanID") in ids for r in s.get("references") or [])
        ] or spans
        root = min(roots, key=lambda s: int(s["startTime"]))
        start = min(int(s["startTime"]) for s in spans)
        end = max(int(s["startTime"]) + int(s["duration"]) for s in spans)
        error_type = _tag(failed[0], "error.type")
        first = name(failed[0]) + (f" ({error_type})" if error_type else "")
        trace_id = str(trace.get("traceID") or spans[0]["traceID"])
        return ErrorTrace(
            trace_id=trace_id, link=self.link(trace_id), start_us=start, duration_us=end - start,
            root=name(root), span_count=len(spans), error_spans=len(failed), first_error=first,
        )
