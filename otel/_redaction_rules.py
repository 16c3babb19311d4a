"""The secret rules of ``redaction_rules.toml``, the one source for the library and the collector.

:func:`rules` loads the file shipped in the package once. The library's scrubbing
(:mod:`otel._scrubbing`) compiles its Python patterns from it; the collector's redaction
processors are rendered from it by ``collector-config/render_redaction.py``, which uses the
RE2 forms built here (:meth:`KeyRule.re2_key`, :meth:`RuleSet.re2_pair`). Patterns in the file
are in the common subset of both engines, so each form below differs only in how it says "not
followed by a letter" (Python: a look-ahead; RE2, which has none: the key characters that are
not letters).
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources

__all__ = ["KeyRule", "RuleSet", "rules"]

_SOURCE = "redaction_rules.toml"


@dataclass(frozen=True)
class KeyRule:
    """A rule that redacts the whole value of a key containing ``pattern``."""

    name: str
    pattern: str
    letter_may_follow: bool = True

    @property
    def python(self) -> re.Pattern[str]:
        """The rule as a Python pattern searched in a key."""
        tail = "" if self.letter_may_follow else "(?![a-z])"
        return re.compile(f"(?:{self.pattern}){tail}", re.IGNORECASE)

    def re2_key(self) -> str:
        """The rule as an RE2 pattern searched in a key (same matches as :attr:`python`)."""
        tail = "" if self.letter_may_follow else "(?:[^a-z]|$)"
        return f"(?i)(?:{self.pattern}){tail}"

    @property
    def anchors(self) -> tuple[tuple[str, ...], ...]:
        """Literal fragments a match must contain, lower case: one tuple per top-level
        alternative of ``pattern``, every fragment of which a match of that alternative holds
        (``passw(?:or)?d|passphrase``: ``(("passw",), ("passphrase",))``). The collector tries
        its regular expressions only on text that holds them: a substring search costs next to
        nothing, a case-insensitive RE2 alternation some microseconds per value."""
        return tuple(_fragments(alternative) for alternative in _alternatives(self.pattern))

    def re2_key_token(self, key_chars: str) -> str:
        """RE2 for a whole pair key (a run of ``key_chars``) that this rule matches."""
        if self.letter_may_follow:
            tail = f"[{key_chars}]*"
        else:
            tail = f"(?:[{key_chars.replace('A-Za-z', '')}][{key_chars}]*)?"
        return f"[{key_chars}]*(?:{self.pattern}){tail}"


@dataclass(frozen=True)
class RuleSet:
    """Everything ``redaction_rules.toml`` declares."""

    marker: str
    scheme_rule: str
    scheme_words: tuple[str, ...]
    credential: str
    key_chars: str
    value_chars: str
    key_rules: tuple[KeyRule, ...]

    @property
    def scheme(self) -> str:
        """Common pattern of ``<scheme> <credential>``: groups 1 (scheme) and 2 (spacing)."""
        return rf"\b({'|'.join(self.scheme_words)})(\s+){self.credential}"

    def re2_pair(self, rule: KeyRule) -> str:
        """RE2 for a ``key=value`` or ``key: value`` pair whose key ``rule`` matches.

        Group 1 is the key and separator. A value that is already the marker, or
        ``<scheme> <marker>`` (the scheme pass runs first), matches the first alternative
        (group 2 the scheme, if any) so that a replacement of ``${1}${2}<marker>`` leaves it as
        it was; any other value (group 2 empty) becomes the marker."""
        words = "|".join(self.scheme_words)
        marker = re.escape(self.marker)
        return (f"(?i)({rule.re2_key_token(self.key_chars)}\\s*[=:]\\s*)"
                f"(?:((?:{words})\\s+)?{marker}|[{self.value_chars}]+)")


def _alternatives(pattern: str) -> list[str]:
    """The top-level ``|`` alternatives of ``pattern``."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(pattern):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    return [*parts, pattern[start:]]


def _fragments(alternative: str) -> tuple[str, ...]:
    """The runs of plain letters and digits outside groups and classes that every match of
    ``alternative`` contains (a run's last character is dropped when a quantifier may remove
    it), those of three characters or more, lower case."""
    runs: list[str] = []
    run, depth, i = "", 0, 0
    while i < len(alternative):
        char = alternative[i]
        if char == "\\":
            i += 1  # an escaped character ends the run
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif depth == 0 and char.isalnum():
            run += char
            i += 1
            continue
        elif depth == 0 and char in "?*{" and run:
            run = run[:-1]
        runs.append(run)
        run = ""
        i += 1
    runs.append(run)
    found = tuple(r.lower() for r in runs if len(r) >= 3)
    if not found:
        raise ValueError(f"redaction rule pattern {alternative!r} has no literal of 3 characters")
    return found


@functools.cache
def rules() -> RuleSet:
    """The rule set of the ``redaction_rules.toml`` shipped with the package."""
    data = tomllib.loads(resources.files("otel").joinpath(_SOURCE).read_text(encoding="utf-8"))
    return RuleSet(
        marker=data["marker"],
        scheme_rule=data["scheme"]["rule"],
        scheme_words=tuple(data["scheme"]["words"]),
        credential=data["scheme"]["credential"],
        key_chars=data["pair"]["key_chars"],
        value_chars=data["pair"]["value_chars"],
        key_rules=tuple(KeyRule(**rule) for rule in data["key_rules"]),
    )
