"""Scrubbing: secrets are redacted before any log line or span attribute leaves the process.

What is redacted (the rules are ``otel/redaction_rules.toml``, which the collector's redaction
processors are rendered from too, so a sender without this library is redacted the same way)
    * Any value whose key matches one of the :data:`KEY_RULES` (case-insensitive, anywhere in the
      key, so ``http.request.header.authorization`` and ``X-Api-Key`` match), at any depth of
      nested dicts, lists and tuples. The whole value becomes ``"[REDACTED]"``.
    * Inside any string: ``Bearer``/``Basic``/``Digest`` credentials and ``key=value`` pairs
      whose key matches a rule (query strings, free text). Only the secret part is replaced.

    ``token`` matches ``access_token`` or ``X-Auth-Token`` but not ``gen_ai.usage.input_tokens``
    or ``max_tokens``: the rule needs ``token`` not followed by a letter.
    ``session_id`` is redacted because the gateway's session id authenticates a WebSocket;
    correlate with ``conversation_id`` instead.

Where it applies
    * Logs: :class:`otel._logging.ScrubbingFilter` on the stdout JSON handler and on the OTLP
      logging handler scrubs ``extra=`` fields, the message arguments and the message text; the
      JSON formatter scrubs again (idempotently) for handlers without the filter.
    * Spans: :class:`ScrubbingSpanProcessor`. A processor's ``on_end`` receives a finished,
      immutable span after earlier processors (the export processor that
      ``opentelemetry-instrument`` installed first) may already have exported it, so scrubbing
      there is racy or too late. The SDK calls ``_on_ending(span)`` on *every* processor before
      *any* ``on_end``; there the processor replaces the span's attribute map (and an event's,
      when one matches) with a new :class:`~opentelemetry.attributes.BoundedAttributes` holding
      the redacted values, same limits and dropped count. The export processors then receive the
      redacted span, whatever their order. This touches the SDK span's ``_attributes``; the unit
      tests pin the behaviour on the locked SDK version (1.45.1), both with a processor that
      exports synchronously before ours and with a batch processor.

What it records
    ``soma_scrubbed_values_total{signal,rule}`` counts each redacted value by signal (``logs`` or
    ``traces``) and rule name. Values that are already ``"[REDACTED]"`` are not counted again, so
    a record seen by two handlers counts once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Span, SpanProcessor

from otel._instruments import library_instruments
from otel._redaction_rules import rules
from otel._sdk import events_and_links, frozen_attributes

__all__ = [
    "KEY_RULES",
    "REDACTED",
    "Redactions",
    "ScrubbingSpanProcessor",
    "key_rule",
    "scrub_text",
    "scrub_value",
]

_RULES = rules()

REDACTED: Final = _RULES.marker

Signal = Literal["logs", "traces"]

#: (rule name, pattern searched in a key), from ``redaction_rules.toml``. The rule name is the
#: metric label.
KEY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (rule.name, rule.python) for rule in _RULES.key_rules)

_AUTH_SCHEME = re.compile(_RULES.scheme, re.IGNORECASE)
_SCHEME_WORD = re.compile("|".join(_RULES.scheme_words), re.IGNORECASE)
# A pair's key is a whole run of key characters (possessive: a long run without a separator
# is given up at once, never backtracked into), then the separator; its value is matched after
# it only when the key names a secret, so an ordinary key never swallows the pair after it
# (``error: password=...``).
_PAIR_KEY = re.compile(rf"(?<![{_RULES.key_chars}])([{_RULES.key_chars}]++)(\s*=\s*|\s*:(?!//)\s*)")
_PAIR_VALUE = re.compile(f"[{_RULES.value_chars}]+")
_MAX_DEPTH = 16


@functools.lru_cache(maxsize=4096)
def key_rule(key: str) -> str | None:
    """The name of the first rule whose pattern occurs in ``key``, else ``None``.

    Cached: attribute and ``extra=`` keys repeat on every span and log record."""
    for name, pattern in KEY_RULES:
        if pattern.search(key):
            return name
    return None


@dataclass
class Redactions:
    """What one scrubbing pass redacted: rule name -> number of values."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, rule: str) -> None:
        self.counts[rule] = self.counts.get(rule, 0) + 1

    def record(self, signal: Signal) -> None:
        """Add the counts to ``soma_scrubbed_values_total``."""
        if not self.counts:
            return
        instruments = library_instruments()
        for rule, count in sorted(self.counts.items()):
            instruments.scrubbed(signal=signal, rule=rule, count=count)

    def __bool__(self) -> bool:
        return bool(self.counts)


def scrub_text(text: str, redactions: Redactions) -> str:
    """Redact credentials inside free text (auth schemes and secret ``key=value`` pairs)."""

    def _scheme(match: re.Match[str]) -> str:
        redactions.add(_RULES.scheme_rule)
        return f"{match.group(1)}{match.group(2)}{REDACTED}"

    if not text:
        return text
    text = _AUTH_SCHEME.sub(_scheme, text)
    if "=" not in text and ":" not in text:
        return text  # no key=value or key: value pair can be in it
    return _scrub_pairs(text, redactions)


def _scrub_pairs(text: str, redactions: Redactions) -> str:
    """Redact the value of every ``key=value``/``key: value`` pair whose key names a secret.

    The auth-scheme pass ran first and left ``Bearer [REDACTED]``: a value that is then the
    scheme word or the marker is left alone, so nothing is counted twice."""
    parts: list[str] = []
    pos = 0
    while (pair := _PAIR_KEY.search(text, pos)) is not None:
        parts.append(text[pos:pair.end()])
        pos = pair.end()
        rule = key_rule(pair.group(1))
        value = _PAIR_VALUE.match(text, pos) if rule is not None else None
        if rule is None or value is None or value.group() == REDACTED or (
                _SCHEME_WORD.fullmatch(value.group())):
            continue
        redactions.add(rule)
        parts.append(REDACTED)
        pos = value.end()
    parts.append(text[pos:])
    return "".join(parts)


def scrub_value(
    value: object, redactions: Redactions, key: str | None = None, _depth: int = 0
) -> object:
    """Return ``value`` with secrets redacted (a new object where something changed).

    ``key`` is the key under which ``value`` is stored; if it matches a rule, the whole value is
    replaced. Mappings, lists and tuples are walked; strings are scrubbed with
    :func:`scrub_text`; every other value is returned as is.
    """
    if key is not None:
        rule = key_rule(key)
        if rule is not None:
            if value == REDACTED:
                return value
            redactions.add(rule)
            return REDACTED
    if isinstance(value, str):
        return scrub_text(value, redactions)
    if _depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {
            k: scrub_value(v, redactions, k if isinstance(k, str) else None, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        items = [scrub_value(v, redactions, None, _depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


#: Attribute value types that carry no text to scrub (only their key can match a rule).
_PLAIN_TYPES = frozenset({int, float, bool, bytes})


@functools.lru_cache(maxsize=4096)
def _scrubbed_string(text: str) -> tuple[str, tuple[str, ...]]:
    """:func:`scrub_text` of ``text`` and the rule of each redaction, cached: span attribute
    values (methods, routes, paths, addresses) repeat from span to span."""
    redactions = Redactions()
    scrubbed = scrub_text(text, redactions)
    rules = tuple(rule for rule, count in redactions.counts.items() for _ in range(count))
    return scrubbed, rules


#: ``(key, value)`` attribute pairs of plain values that need no redaction (most pairs repeat
#: from span to span: methods, routes, addresses); emptied when full. A plain value's verdict
#: depends on its key and, for a string, on its text, so equal pairs (``1 == True``) share it.
_CLEAN: set[tuple[str, object]] = set()
_CLEAN_MAX = 8192
_HASHABLE_PLAIN = _PLAIN_TYPES | {str}


def _all_clean(attributes: Mapping[str, object]) -> bool:
    """True when every item is a pair already found clean."""
    for item in attributes.items():
        if type(item[1]) not in _HASHABLE_PLAIN or item not in _CLEAN:
            return False
    return True


def _scrubbed_attributes(
    attributes: Mapping[str, object] | None, redactions: Redactions
) -> dict[str, object] | None:
    """The scrubbed copy of ``attributes`` if anything was redacted, else ``None``.

    Same result as :func:`scrub_value` on each item; strings take the cached path, and a map
    of pairs already found clean is not looked at again."""
    if not attributes or _all_clean(attributes):
        return None
    scrubbed: dict[str, object] = {}
    changed = False
    for key, value in attributes.items():
        new: object
        if type(value) is str and key_rule(key) is None:
            new, rules = _scrubbed_string(value)
            for rule in rules:
                redactions.add(rule)
            changed = changed or bool(rules)
            clean = not rules
        elif type(value) in _PLAIN_TYPES and key_rule(key) is None:
            new, clean = value, True
        else:
            before = sum(redactions.counts.values())
            new = scrub_value(value, redactions, key)
            changed = changed or sum(redactions.counts.values()) != before
            clean = False
        if clean:
            if len(_CLEAN) >= _CLEAN_MAX:
                _CLEAN.clear()
            _CLEAN.add((key, value))
        scrubbed[key] = new
    return scrubbed if changed else None


def _replacement(original: object, scrubbed: Mapping[str, object]) -> BoundedAttributes:
    maxlen = getattr(original, "maxlen", None)
    max_value_len = getattr(original, "max_value_len", None)
    replacement = BoundedAttributes(
        maxlen=maxlen,
        attributes=scrubbed,  # type: ignore[arg-type]
        immutable=True,
        max_value_len=max_value_len,
    )
    replacement.dropped = getattr(original, "dropped", 0)
    return replacement


class ScrubbingSpanProcessor(SpanProcessor):
    """Redacts span and event attributes in ``_on_ending``, before any processor exports.

    ``on_start`` and ``on_end`` are the base class's no-ops (lean spans skip such an
    ``on_start``): attributes may change until the span ends, and it is scrubbed by then."""

    def _on_ending(self, span: Span) -> None:
        attributes = frozen_attributes(span)
        events = events_and_links(span)[0]
        if not events and (not attributes or _all_clean(attributes)):
            return
        redactions = Redactions()
        scrubbed = _scrubbed_attributes(attributes, redactions)
        if scrubbed is not None:
            span._attributes = _replacement(span._attributes, scrubbed)
        for event in events:
            event_scrubbed = _scrubbed_attributes(event.attributes, redactions)
            if event_scrubbed is not None:
                event._attributes = _replacement(event.attributes, event_scrubbed)
        redactions.record("traces")

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        return True
