"""A small rule-based intent classifier (first matching rule wins).

=============  =============================================================  ===============
intent         rule                                                           tool request
=============  =============================================================  ===============
``calculate``  text starts with ``calculate`` / ``calc`` / ``compute``        ``calculate``
               followed by an expression                                      ``{"expression"}``
``stats``      text starts with ``stats`` followed by some text               ``stats`` ``{"text"}``
``primes``     text starts with ``primes`` followed by a number               ``primes``
                                                                              ``{"limit"}``
``greeting``   the first word is hi, hello, hey, good morning/evening, ...    -
``farewell``   the first word is bye, goodbye, see you, ...                   -
``question``   ends with ``?`` or starts with who/what/when/where/why/how/...  -
``statement``  anything else                                                  -
=============  =============================================================  ===============

The label set is fixed (:data:`INTENTS`), so ``intent_classification_total{intent}`` stays
low-cardinality.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

INTENTS: Final = ("calculate", "stats", "primes", "greeting", "farewell", "question", "statement")

_TOOL = re.compile(r"^\s*(calculate|calc|compute|stats)\b[\s:]*(?P<arg>.+?)\s*$", re.I | re.S)
_PRIMES = re.compile(r"^\s*primes\b[\s:]*(?P<limit>\d{1,11})\s*$", re.I)
_GREETING = re.compile(r"^\s*(hi|hello|hey|greetings|good (morning|afternoon|evening))\b", re.I)
_FAREWELL = re.compile(r"^\s*(bye|goodbye|see you|farewell|good night)\b", re.I)
_QUESTION_WORD = re.compile(
    r"^\s*(who|what|when|where|why|how|which|can|could|would|is|are|do|does)\b", re.I
)


@dataclass(frozen=True)
class Intent:
    """A classification: the intent, and the tool request it implies (if any)."""

    name: str
    tool_name: str | None = None
    arguments: dict[str, str] = field(default_factory=dict)


def classify(text: str) -> Intent:
    """Classify ``text`` with the rules of the module docstring."""
    primes = _PRIMES.match(text)
    if primes is not None:
        return Intent("primes", "primes", {"limit": primes.group("limit")})
    tool = _TOOL.match(text)
    if tool is not None:
        verb, arg = tool.group(1).lower(), tool.group("arg")
        if verb == "stats":
            return Intent("stats", "stats", {"text": arg})
        return Intent("calculate", "calculate", {"expression": arg})
    if _GREETING.match(text):
        return Intent("greeting")
    if _FAREWELL.match(text):
        return Intent("farewell")
    if text.rstrip().endswith("?") or _QUESTION_WORD.match(text):
        return Intent("question")
    return Intent("statement")
