"""Run one tool in a child process with resource limits, and measure what it really used.

:func:`run_sandboxed` starts ``python -I runner.py`` (see :mod:`.runner`, which sets
``RLIMIT_CPU``/``RLIMIT_AS`` on itself before reading any input) with an empty environment,
its stdin/stdout/stderr in temporary files, in a new session. A timer kills it with SIGKILL at
the wall-clock limit. The parent waits with ``waitid(WNOWAIT)`` (the child stays a zombie, so
its pid cannot be reused while the timer may still fire), then reaps it with ``os.wait4``,
whose ``rusage`` is that child's own: CPU seconds = ``ru_utime + ru_stime``, peak RSS =
``ru_maxrss`` KiB * 1024. Blocking; call it through ``asyncio.to_thread``.

Outcome kinds (they become ``error.type`` on the ``execute_tool`` span):

================  ============================================================
``ok``            exit 0 with an output
``tool_error``    exit 2: the tool refused its input
``limit_exceeded``  exit 3 (``MemoryError`` under ``RLIMIT_AS``), or killed by
                  SIGXCPU/SIGKILL from ``RLIMIT_CPU``
``tool_timeout``  killed by the wall-clock timer
``tool_crashed``  any other exit (an uncaught exception, e.g. the injected fault)
================  ============================================================
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

RUNNER: Final = str(Path(__file__).with_name("runner.py"))


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run."""

    cpu_seconds: int = 2
    memory_bytes: int = 256 * 1024 * 1024
    wall_seconds: float = 5.0


@dataclass(frozen=True)
class Outcome:
    """What one sandboxed run produced and used."""

    kind: str
    output: Any
    message: str
    exit_code: int
    cpu_seconds: float
    memory_bytes: int
    wall_seconds: float


def run_sandboxed(tool: str, arguments: dict[str, Any], limits: Limits, *, fail: bool) -> Outcome:
    """Run ``tool`` on ``arguments`` in a limited child; ``fail`` makes the child raise."""
    request = json.dumps({"tool": tool, "arguments": arguments, "fail": fail}).encode()
    with (
        tempfile.TemporaryFile() as stdin,
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
    ):
        stdin.write(request)
        stdin.seek(0)
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-I", RUNNER, str(limits.cpu_seconds), str(limits.memory_bytes)],
            stdin=stdin, stdout=stdout, stderr=stderr, env={"LANG": "C.UTF-8"},
            close_fds=True, start_new_session=True, cwd="/",
        )
        lock = threading.Lock()
        state = {"reaped": False, "timed_out": False}

        def kill_on_deadline() -> None:
            with lock:
                if not state["reaped"]:
                    state["timed_out"] = True
                    os.kill(proc.pid, signal.SIGKILL)

        timer = threading.Timer(limits.wall_seconds, kill_on_deadline)
        timer.start()
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            with lock:
                state["reaped"] = True
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        out = stdout.read().decode("utf-8", "replace")
        err = stderr.read().decode("utf-8", "replace")
    cpu = usage.ru_utime + usage.ru_stime
    memory = usage.ru_maxrss * 1024
    code = proc.returncode

    def outcome(kind: str, output: Any = None, message: str = "") -> Outcome:
        return Outcome(kind, output, message, code, cpu, memory, wall)

    if state["timed_out"]:
        return outcome("tool_timeout", message=f"killed after {limits.wall_seconds:g} s wall time")
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return outcome("limit_exceeded",
                       message=f"CPU limit of {limits.cpu_seconds} s exceeded (signal {-code})")
    try:
        payload = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except json.JSONDecodeError:
        payload = {}
    if code == 0 and "output" in payload:
        return outcome("ok", output=payload["output"])
    if code in (2, 3) and isinstance(payload, dict):
        return outcome(str(payload.get("error_type", "tool_error")),
                       message=str(payload.get("message", "")))
    last = err.strip().splitlines()[-1] if err.strip() else f"exit code {code}"
    return outcome("tool_crashed", message=last[:500])
