"""The SDK internals the library reads, in one place (pinned SDK 1.45.1, see requirements.lock).

* :func:`events_and_links`: a finished span's events and links, without the copy that
  ``ReadableSpan.events``/``.links`` make when there are none (most spans).
* :func:`frozen_attributes`: a finished span's attribute map without the Mapping protocol.
  ``ReadableSpan.attributes`` wraps the map in a ``MappingProxyType`` and ``BoundedAttributes``
  copies itself under a lock on iteration; both cost a call per key on every span. ``Span.end``
  freezes the map (``_immutable``) before any processor sees the span, so reading its dict is
  safe from then on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link

__all__ = ["events_and_links", "frozen_attributes"]


def frozen_attributes(span: ReadableSpan) -> Mapping[str, object]:
    """The attributes of an ended span, read directly when the SDK has frozen them."""
    attributes = span._attributes
    if type(attributes) is BoundedAttributes and attributes._immutable:
        return attributes._dict
    return span.attributes or {}


def events_and_links(span: ReadableSpan) -> tuple[Sequence[Event], Sequence[Link]]:
    """``span.events`` and ``span.links``, skipping their copies when they are empty."""
    return (span.events if span._events else (), span.links if span._links else ())
