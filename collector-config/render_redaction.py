#!/usr/bin/env python3
"""Render the collector's redaction processors and counters from ``otel/redaction_rules.toml``.

The library scrubs what its own processes send; the collector redacts what every sender sends
(a service without the library, a Go or Node service, telemetrygen) with the same rules, so the
two cannot drift: this script writes the two generated blocks of ``config.yaml`` (between the
``BEGIN generated`` and ``END generated`` lines) and ``tests/collector/test_redaction.py``
fails when they differ from what it renders.

Usage:
    render_redaction.py --write   rewrite the generated blocks of config.yaml
    render_redaction.py --check   exit 1 (naming the block) when they are out of date

What the processors do, per signal (``transform/redact_traces``, ``_logs``, ``_metrics``), on
span, span event, log record (attributes and body) and data point attributes and on resource
attributes, in the library's order:

1. a value whose key matches a key rule becomes the marker (the first matching rule counts it);
2. ``<scheme> <credential>`` in a string: the credential becomes the marker;
3. for each key rule, ``key=value``/``key: value`` pairs in a string whose key matches it: the
   value becomes the marker.

A group runs only on an item where a cheap guard (one key pattern, one text pattern) matches.
Each step counts what it redacted into the item's ``soma.redacted`` map (rule -> values): for
key rules the values replaced, for text steps the markers added (one per credential or pair,
as the library counts). Values that arrive already
redacted (a sender with the library) are not counted again. Top-level values only: a map or
list nested inside an attribute is redacted whole when its key matches, not walked. Resource
attributes are redacted but not counted (they are not per item).

``signal_to_metrics/redactions`` sums the ``soma.redacted`` maps into
``soma_collector_redacted_values_total{job,instance,signal,rule}`` (job and instance of the
sender); the pipelines strip the map before any store sees it. OTTL lambdas (``Any``,
``Filter``, ``MapEach``, ``Reduce``, ``When``) need the collector's
``--feature-gates=ottl.functions.enableLambda`` (``stack/components.py`` passes it).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from otel._catalog import REDACTION_SERIES
from otel._redaction_rules import RuleSet, rules

CONFIG = Path(__file__).with_name("config.yaml")
COUNTS = "soma.redacted"                 # per-item map rule -> values redacted
RULE_LABEL = "soma.redaction.rule"       # datapoint attributes of the counter, renamed later
SIGNAL_LABEL = "soma.redaction.signal"


@dataclass(frozen=True)
class Target:
    """One attribute map or log body to redact, and where its redactions are counted."""

    context: str           # OTTL context of the statement group
    path: str              # the map (or the log body)
    counts: str | None     # the attribute map that holds the counts; None: not counted
    body: bool = False     # a log body, redacted as a map or as a string by two groups


def _quote(text: str) -> str:
    """An OTTL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Renderer:
    """Builds the OTTL statement groups for one rule set."""

    def __init__(self, rule_set: RuleSet) -> None:
        self.r = rule_set
        self.marker = _quote(rule_set.marker)
        self.key_bodies = [rule.re2_key().removeprefix("(?i)") for rule in rule_set.key_rules]
        self.keys_all = _quote("(?i)(?:" + "|".join(self.key_bodies) + ")")
        # A pair whose value is not already the marker (a value starting "[R" is taken as one).
        fresh = f"(?:[{rule_set.value_chars}\\[]|\\[[{rule_set.value_chars}R])"
        tokens = [rule.re2_key_token(rule_set.key_chars) for rule in rule_set.key_rules]
        self.scheme = _quote("(?i)" + rule_set.scheme)
        self.pairs = _quote(f"(?i)(?:{'|'.join(tokens)})\\s*[=:]\\s*{fresh}")
        self.replacement = _quote("$${1}$${2}" + rule_set.marker)
        scheme_anchors = tuple((word.lower(),) for word in rule_set.scheme_words)
        #: (rule, anchors, pattern that redacts, pattern that says the step has work)
        self.steps = [(rule_set.scheme_rule, scheme_anchors, "(?i)" + rule_set.scheme,
                       "(?i)" + rule_set.scheme)]
        self.steps += [(rule.name, rule.anchors, rule_set.re2_pair(rule),
                        f"(?i){token}\\s*[=:]\\s*{fresh}")
                       for rule, token in zip(rule_set.key_rules, tokens, strict=True)]
        self.scheme_anchors = scheme_anchors
        self.key_anchors = tuple(a for rule in rule_set.key_rules for a in rule.anchors)

    @staticmethod
    def _found(anchors: tuple[tuple[str, ...], ...]) -> str:
        """OTTL: the lower-cased text ``lower`` holds every fragment of some alternative."""
        alternatives = [" and ".join(f'Index(lower, "{f}") >= 0' for f in frags)
                        for frags in anchors]
        return "(" + " or ".join(f"({a})" for a in alternatives) + ")"

    def _holds(self, text: str, anchors: tuple[tuple[str, ...], ...]) -> str:
        """OTTL: ``text`` holds every fragment of some alternative (substring search only, on
        the text lower-cased once: a one-item list binds it to a lambda parameter)."""
        return f"Any([ToLowerCase({text})], (_, lower) => {self._found(anchors)})"

    def _prefilter(self, path: str) -> str:
        """OTTL: the map ``path`` may hold a secret: its keys (as one JSON text) hold a key
        rule's anchors, or its string values (one JSON text) hold a scheme word, or "=" or ":" and a
        key rule's anchors. A few substring searches per item, whatever its size: the exact
        per-attribute guard runs only where this holds."""
        keys = f"Any([ToLowerCase(String(Keys({path})))], (_, lower) => " \
               f"{self._found(self.key_anchors)})"
        strings = f"Filter({path}, (_, v) => IsString(v))"  # JSON has no NaN, for one
        values = (f"Any([ToLowerCase(String(Values({strings})))], (_, lower) => "
                  f'((Index(lower, "=") >= 0 or Index(lower, ":") >= 0) and '
                  f"{self._found(self.key_anchors)}) or {self._found(self.scheme_anchors)})")
        return f"({keys} or {values})"

    def _secret_key(self, key: str) -> str:
        """OTTL: ``key`` names a secret (anchors first, the exact pattern only then)."""
        return f"{self._holds(key, self.key_anchors)} and IsMatch({key}, {self.keys_all})"

    def _pair_in(self, value: str, anchors: tuple[tuple[str, ...], ...], pattern: str) -> str:
        """OTTL: the string ``value`` holds a pair that ``pattern`` (of a rule with
        ``anchors``) matches; a value without "=" or ":" or without the anchors is passed
        without running the pattern."""
        return (f'(Index({value}, "=") >= 0 or Index({value}, ":") >= 0) and '
                f"{self._holds(value, anchors)} and IsMatch({value}, {pattern})")

    def _has_text_work(self, value: str) -> str:
        """OTTL: the string ``value`` holds a credential or a pair not yet redacted."""
        return (f"({self._holds(value, self.scheme_anchors)} and IsMatch({value}, {self.scheme}))"
                f" or ({self._pair_in(value, self.key_anchors, self.pairs)})")

    def _markers(self, path: str, string: bool) -> str:
        """How many markers the string values of the map ``path`` (or the string) hold."""
        if string:
            return f"Len(Split({path}, {self.marker})) - 1"
        return (f"Reduce(Filter({path}, (_, v) => IsString(v)), 0, "
                f"(acc, _, v) => acc + Len(Split(v, {self.marker})) - 1)")

    def _step_check(self, path: str, anchors: tuple[tuple[str, ...], ...], check: str,
                    scheme: bool, string: bool) -> str:
        """OTTL converter: some string value of ``path`` (or the string) has work for a step."""
        value = path if string else "v"
        test = (f"{self._holds(value, anchors)} and IsMatch({value}, {_quote(check)})"
                if scheme else self._pair_in(value, anchors, _quote(check)))
        if string:  # a converter, not a boolean expression, so that set() can store it
            return f"When(() => {test}, true, false)"
        return f"Any({path}, (_, v) => IsString(v) and {test})"

    def group(self, t: Target, string: bool = False) -> dict[str, Any]:
        """The statement group that redacts ``t`` (its map form, or its string form).

        The group runs where a guard finds a secret key with a value not yet redacted, or a
        value with something to redact; inside, each step runs only where it has work."""
        cache = f"{t.context}.cache"
        fresh_key = f"{self._secret_key('k')} and v != {self.marker}"
        if string:
            guard = f"IsString({t.path}) and ({self._has_text_work(t.path)})"
        else:
            guard = (f"{self._prefilter(t.path)} and Any({t.path}, (k, v) => ({fresh_key}) or "
                     f"(IsString(v) and ({self._has_text_work('v')})))")
            if t.body:
                guard = f"IsMap({t.path}) and {guard}"
        counts = f'{t.counts}["{COUNTS}"]' if t.counts else None
        out: list[str] = []
        if counts:
            zeros = ", ".join(f'"{rule.name}": 0' for rule in self.r.key_rules)
            out.append(f"set({counts}, {{{zeros}}}) where {counts} == nil")
        if not string:
            out.append(f'set({cache}["keys"], Any({t.path}, (k, v) => {fresh_key}))')
            keys = f'where {cache}["keys"] == true'
            if counts:
                for i, rule in enumerate(self.r.key_rules):
                    earlier = "(?i)(?:" + "|".join(self.key_bodies[:i]) + ")"
                    not_earlier = f" and not IsMatch(k, {_quote(earlier)})" if i else ""
                    out.append(
                        f'set({counts}["{rule.name}"], {counts}["{rule.name}"] + Len(Filter('
                        f"{t.path}, (k, v) => IsMatch(k, {_quote(rule.re2_key())}){not_earlier} "
                        f"and v != {self.marker}))) {keys}")
            out.append(f"set({t.path}, MapEach({t.path}, (k, v) => When(() => "
                       f"{self._secret_key('k')}, {self.marker}, v))) {keys}")
        if counts:
            out.append(f'set({cache}["before"], {self._markers(t.path, string)})')
        for i, (name, anchors, pattern, check) in enumerate(self.steps):
            out.append(f'set({cache}["run"], '
                       f"{self._step_check(t.path, anchors, check, i == 0, string)})")
            run = f'where {cache}["run"] == true'
            replace = (f"replace_pattern({t.path}, " if string else
                       f'replace_all_patterns({t.path}, "value", ')
            out.append(f"{replace}{_quote(pattern)}, {self.replacement}) {run}")
            if counts:
                out += [f'set({cache}["after"], {self._markers(t.path, string)}) {run}',
                        f'set({counts}["{name}"], {counts}["{name}"] + {cache}["after"] - '
                        f'{cache}["before"]) {run}',
                        f'set({cache}["before"], {cache}["after"]) {run}']
        return {"context": t.context, "conditions": [guard], "statements": out}


def _prepare(item: str) -> dict[str, Any]:
    """Drop what a sender may have put where the counts go (they would be counted)."""
    assert all(key.startswith("soma.redact") for key in (COUNTS, RULE_LABEL, SIGNAL_LABEL))
    return {"context": item.split(".")[0],
            "statements": [f'delete_matching_keys({item}, "^soma\\\\.redact")']}


def _finish(item: str) -> dict[str, Any]:
    """Keep only the rules that redacted something; no map where nothing was redacted."""
    counts = f'{item}["{COUNTS}"]'
    return {"context": item.split(".")[0], "conditions": [f"{counts} != nil"], "statements": [
        f"set({counts}, Filter({counts}, (_, v) => v > 0))",
        f'delete_key({item}, "{COUNTS}") where Len({counts}) == 0']}


#: signal -> (statements key, item context, the item's attributes, the counter's section)
SIGNALS = {
    "traces": ("trace_statements", "span", "span.attributes", "spans"),
    "logs": ("log_statements", "log", "log.attributes", "logs"),
    "metrics": ("metric_statements", "datapoint", "datapoint.attributes", "datapoints"),
}


def processors(rule_set: RuleSet) -> dict[str, Any]:
    """``transform/redact_<signal>`` for each signal and ``transform/strip_redaction_counts``."""
    r = _Renderer(rule_set)
    out: dict[str, Any] = {}
    for signal, (key, item, attributes, _) in SIGNALS.items():
        groups = [_prepare(attributes),
                  r.group(Target("resource", "resource.attributes", None)),
                  r.group(Target(item, attributes, attributes))]
        if signal == "traces":
            groups.append(r.group(Target("spanevent", "spanevent.attributes", attributes)))
        if signal == "logs":
            body = Target("log", "log.body", attributes, body=True)
            groups += [r.group(body), r.group(body, string=True)]
        groups.append(_finish(attributes))
        out[f"transform/redact_{signal}"] = {"error_mode": "propagate", key: groups}
    out["transform/strip_redaction_counts"] = {"error_mode": "propagate", **{
        key: [{"context": item, "conditions": [f'{attributes}["{COUNTS}"] != nil'],
               "statements": [f'delete_key({attributes}, "{COUNTS}")']}]
        for key, item, attributes, _ in SIGNALS.values()}}
    out["transform/redaction_labels"] = {"error_mode": "propagate", "metric_statements": [{
        "context": "datapoint", "statements": [
            f'set(datapoint.attributes["{label}"], datapoint.attributes["{key}"])'
            for label, key in (("signal", SIGNAL_LABEL), ("rule", RULE_LABEL))] + [
            f'delete_key(datapoint.attributes, "{key}")' for key in (SIGNAL_LABEL, RULE_LABEL)]}]}
    return out


def counters(rule_set: RuleSet) -> dict[str, Any]:
    """``signal_to_metrics/redactions``: one sum per signal and rule of the items' counts."""
    section: dict[str, Any] = {}
    for signal, (_, _, attributes, name) in SIGNALS.items():
        section[name] = [{
            "name": REDACTION_SERIES.instrument,
            "description": "Values the collector redacted, by sender, signal and rule.",
            "unit": REDACTION_SERIES.unit,
            "include_resource_attributes": [{"key": "service.name"},
                                            {"key": "service.instance.id"}],
            "attributes": [{"key": SIGNAL_LABEL, "default_value": signal},
                           {"key": RULE_LABEL, "default_value": rule.name}],
            "conditions": [f'{attributes}["{COUNTS}"]["{rule.name}"] != nil'],
            "sum": {"value": f'{attributes}["{COUNTS}"]["{rule.name}"]', "monotonic": True},
        } for rule in rule_set.key_rules]
    return {"signal_to_metrics/redactions": section}


def render(rule_set: RuleSet) -> dict[str, str]:
    """The generated blocks of config.yaml by name, as YAML text indented for their place."""
    return {"redaction processors": _yaml(processors(rule_set), 2),
            "redaction counters": _yaml(counters(rule_set), 2)}


def main(argv: list[str] | None = None) -> int:
    """Write or check the generated blocks of config.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = CONFIG.read_text()
    new = text
    for name, block in render(rules()).items():
        new = replace_block(new, name, block)
    if args.check:
        if new != text:
            print(f"{CONFIG}: generated blocks out of date; run {Path(__file__).name} --write",
                  file=sys.stderr)
            return 1
        return 0
    CONFIG.write_text(new)
    return 0


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with the lines between the BEGIN and END lines of block ``name`` replaced."""
    label = re.escape(name)
    pattern = re.compile(
        rf"(^[ ]*# BEGIN generated {label}[^\n]*\n).*?(^[ ]*# END generated {label}\n)",
        re.M | re.S)
    if not pattern.search(text):
        raise SystemExit(f"{CONFIG}: no BEGIN/END generated {name} lines")
    return pattern.sub(lambda m: m.group(1) + block + m.group(2), text, count=1)


def _yaml(value: Any, indent: int) -> str:
    dumped = yaml.safe_dump(value, sort_keys=False, width=10_000, allow_unicode=True)
    pad = " " * indent
    return "".join(pad + line + "\n" for line in dumped.splitlines())


if __name__ == "__main__":
    sys.exit(main())
