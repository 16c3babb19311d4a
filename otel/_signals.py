"""Flush telemetry when the process is told to stop with SIGTERM.

Why
    The SDK flushes its batch processors at interpreter exit (``atexit``). A process killed by
    SIGTERM's default action never runs ``atexit``, and uvicorn, after its graceful shutdown,
    restores the handler it found and raises the signal again, so a FastAPI service that is
    stopped or redeployed loses the spans, logs and metrics of its last seconds (up to
    ``OTEL_BSP_SCHEDULE_DELAY``, 5 s by default): the last requests of every deploy are missing
    from every series and trace.

What
    :func:`install` puts a SIGTERM handler in place when the process has none of its own (the
    handler is ``SIG_DFL``, and only from the main thread). On SIGTERM it calls ``flush`` (each
    provider's ``force_flush``, bounded by its timeout), then restores ``SIG_DFL`` and raises
    the signal again, so the process ends exactly as it would have: by SIGTERM, exit status
    -15. An application that installs its own handler later replaces this one, and uvicorn's
    re-raise after its shutdown reaches it. :func:`uninstall` puts ``SIG_DFL`` back if the
    handler is still the one installed.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["install", "uninstall"]

_LOG = logging.getLogger("otel")
_installed: Callable[[int, FrameType | None], None] | None = None


def install(flush: Callable[[], object]) -> bool:
    """Flush with ``flush`` on SIGTERM before the default action; False where not installed."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        try:
            flush()
        except Exception:
            _LOG.exception("flushing telemetry on SIGTERM failed")
        finally:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    _installed = on_sigterm
    return True


def uninstall() -> None:
    """Put ``SIG_DFL`` back if the installed handler is still in place."""
    global _installed
    if (_installed is not None and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is _installed):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _installed = None
