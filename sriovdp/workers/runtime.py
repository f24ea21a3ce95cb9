"""Process plumbing every child uses: parent-death signal, stop flag (every child process)."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from types import FrameType

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM, expected_parent: int | None = None) -> None:
    """Asks the kernel to send ``sig`` when the parent exits; exits now if it already has.

    ``expected_parent`` is the parent pid seen before the exec or fork; if ``getppid()`` differs
    after arming, the parent died in between and we leave at once (no orphans holding sockets).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: rely on the getppid() check in main loops
        pass
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(0)


class StopFlag:
    """Set by SIGTERM/SIGINT; main loops wait on it. Handlers only set the event."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None

    def install(self, *signals: int) -> None:
        for sig in signals or (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None) -> bool:
        return self.event.wait(timeout)
