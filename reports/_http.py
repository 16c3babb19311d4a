"""The one HTTP call the report makes, with errors that name the API that failed."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class SourceError(RuntimeError):
    """A live API (Prometheus, Jaeger) was unreachable or answered an error."""


def get_json(
    *, source: str, base: str, path: str, params: dict[str, str], timeout: float
) -> Any:
    """GET ``base + path`` with ``params`` from the API named ``source``; decode the JSON.

    Prometheus answers a bad query with HTTP 400 and a JSON body naming the error; that body is
    read so the error says what was wrong, not only the status.
    """
    full = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(full, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace")[:500]
        raise SourceError(f"{source} answered HTTP {exc.code} to {full}: {body}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise SourceError(f"{source} at {base} is unreachable: {reason}") from None
    except json.JSONDecodeError as exc:
        raise SourceError(f"{source} answered {full} with something not JSON: {exc}") from None
