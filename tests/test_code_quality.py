"""The code stays ruff- and mypy-clean: CI fails on a lint or type error, not just on tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    """`ruff check .` passes on the whole repository."""
    done = _run(str(BIN / "ruff"), "check", ".", "--output-format", "concise")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_finds_nothing() -> None:
    """`mypy` (strict, pyproject.toml) passes on the library, instruments, services, stack and
    reports."""
    done = _run(str(BIN / "mypy"), "otel", "services_instrumentation", "services", "stack",
                "reports")
    assert done.returncode == 0, done.stdout + done.stderr
