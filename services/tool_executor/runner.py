"""The sandbox child: limits itself, runs one tool, prints one JSON line, exits.

Started by :mod:`services.tool_executor.sandbox` as ``python -I runner.py CPU_S MEMORY_BYTES``
(isolated mode: no ``PYTHONPATH``, no site packages, no OpenTelemetry auto-instrumentation), so
this file imports only the standard library. Before reading its input it sets
``RLIMIT_CPU`` (soft ``CPU_S``, hard ``CPU_S + 1``: SIGXCPU, then SIGKILL), ``RLIMIT_AS``
(``MEMORY_BYTES``: allocations beyond it raise ``MemoryError``), ``RLIMIT_FSIZE`` 1 MiB (bounds
the output file) and ``RLIMIT_NOFILE`` 16.

stdin: ``{"tool": name, "arguments": {...}, "fail": bool}``. stdout: one JSON object.

=========  =========================================================================
exit code  meaning
=========  =========================================================================
0          ``{"output": ...}``: the tool's result
2          ``{"error_type": "tool_error", "message": ...}``: the input is unusable
3          ``{"error_type": "limit_exceeded", "message": ...}``: ``MemoryError``
other      the tool crashed (uncaught exception, traceback on stderr); ``"fail": true``
           (the ``tool_failure_*`` fault switches) raises ``RuntimeError`` inside the tool
=========  =========================================================================

Tools:

* ``calculate {"expression"}``: arithmetic on int/float literals with ``+ - * / // % **``,
  unary ``+ -``, parentheses and ``abs min max round sqrt``; evaluated by walking the ``ast``
  (no ``eval``); exponents above 10000 and results above 10**100000 are refused.
* ``stats {"text"}``: characters, words, sentences, unique words, mean word length and the
  three most common words.
* ``primes {"limit", "method"}``: how many primes are below ``limit`` (at most 10**10), by
  ``trial`` division (CPU-bound, little memory) or a ``sieve`` (``limit`` bytes of memory).
"""

from __future__ import annotations

import ast
import collections
import json
import math
import operator
import re
import resource
import sys
from collections.abc import Callable
from typing import Any

MAX_EXPRESSION = 500
MAX_EXPONENT = 10000
MAX_DIGITS = 100000
MAX_PRIMES_LIMIT = 10**10
MAX_OUTPUT_BYTES = 1 << 20


class ToolError(Exception):
    """The tool's input is unusable (reported, never retried)."""


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs, "min": min, "max": max, "round": round, "sqrt": math.sqrt,
}


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_DIGITS * 3.33:
        raise ToolError("result too large")
    return value


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent above {MAX_EXPONENT}")
        try:
            return _check_size(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError as exc:
            raise ToolError("division by zero") from exc
        except OverflowError as exc:
            raise ToolError("numeric overflow") from exc
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS and not node.keywords and node.args
    ):
        try:
            return _FUNCTIONS[node.func.id](*(_evaluate(a) for a in node.args))
        except (ValueError, TypeError) as exc:
            raise ToolError(f"{node.func.id}: {exc}") from exc
    raise ToolError(f"unsupported syntax: {type(node).__name__}")


def calculate(arguments: dict[str, Any]) -> Any:
    """Evaluate an arithmetic expression safely (see the module docstring)."""
    expression = arguments.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("'expression' must be a non-empty string")
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an expression: {exc.msg}") from exc
    value = _evaluate(tree)
    return value if isinstance(value, int) and value.bit_length() < 64 else (
        str(value) if isinstance(value, int) else value
    )


_WORD = re.compile(r"[A-Za-z0-9']+")
_SENTENCE = re.compile(r"[.!?]+(\s|$)")


def stats(arguments: dict[str, Any]) -> dict[str, Any]:
    """Count characters, words and sentences of a text."""
    text = arguments.get("text")
    if not isinstance(text, str):
        raise ToolError("'text' must be a string")
    words = [w.lower() for w in _WORD.findall(text)]
    sentences = len(_SENTENCE.findall(text)) or (1 if text.strip() else 0)
    return {
        "characters": len(text),
        "words": len(words),
        "sentences": sentences,
        "unique_words": len(set(words)),
        "mean_word_length": round(sum(map(len, words)) / len(words), 2) if words else 0.0,
        "top_words": collections.Counter(words).most_common(3),
    }


def primes(arguments: dict[str, Any]) -> int:
    """Count the primes below ``limit`` by trial division or a sieve."""
    limit, method = arguments.get("limit"), arguments.get("method", "trial")
    if isinstance(limit, str) and limit.strip().isdigit():
        limit = int(limit.strip())
    if not isinstance(limit, int) or not 0 <= limit <= MAX_PRIMES_LIMIT:
        raise ToolError(f"'limit' must be an integer in [0, {MAX_PRIMES_LIMIT}]")
    if method == "sieve":
        sieve = bytearray([1]) * limit
        sieve[:2] = b"\x00\x00"[: min(2, limit)]
        for n in range(2, math.isqrt(max(limit - 1, 0)) + 1):
            if sieve[n]:
                sieve[n * n :: n] = bytes(len(range(n * n, limit, n)))
        return sum(sieve)
    if method != "trial":
        raise ToolError("'method' must be 'trial' or 'sieve'")
    count = 0
    for n in range(2, limit):
        if all(n % d for d in range(2, math.isqrt(n) + 1)):
            count += 1
    return count


TOOLS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "calculate": calculate, "stats": stats, "primes": primes,
}


def _emit(payload: dict[str, Any], code: int) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()
    raise SystemExit(code)


def main() -> None:
    """Apply the limits from argv, run the tool named on stdin, print its result."""
    cpu_seconds, memory_bytes = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_OUTPUT_BYTES, MAX_OUTPUT_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
    request = json.loads(sys.stdin.read())
    tool = TOOLS[request["tool"]]
    try:
        if request.get("fail"):
            raise RuntimeError("injected tool failure (tool_failure fault switch)")
        output = tool(request.get("arguments") or {})
    except ToolError as exc:
        _emit({"error_type": "tool_error", "message": str(exc)}, 2)
    except MemoryError:
        _emit({"error_type": "limit_exceeded", "message": "memory limit exceeded"}, 3)
    except RecursionError as exc:
        _emit({"error_type": "tool_error", "message": f"expression too deep: {exc}"}, 2)
    _emit({"output": output}, 0)


if __name__ == "__main__":
    main()
