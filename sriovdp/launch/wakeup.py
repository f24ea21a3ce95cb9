"""A signal wake-up pipe for poll loops (supervisor, health monitor and kubelet watcher).

Python retries ``poll()`` after a signal handler ran (PEP 475), so a SIGTERM would only be noticed
at the next timeout. :class:`WakeupPipe` registers a pipe with ``signal.set_wakeup_fd``: the pipe
becomes readable when any signal arrives, and a loop that polls it together with its sockets
notices the stop flag at once. Create it from the main thread, after installing the handlers.
"""

from __future__ import annotations

import os
import signal


class WakeupPipe:
    """A non-blocking pipe the interpreter writes a byte into whenever a signal arrives."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def fileno(self) -> int:
        return self._read

    def drain(self) -> list[int]:
        """Empties the pipe; returns the numbers of the signals that arrived, oldest first."""
        signums: list[int] = []
        try:
            while data := os.read(self._read, 512):
                signums.extend(data)
        except BlockingIOError:
            pass
        return signums

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)
