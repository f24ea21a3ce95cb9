"""The one wake-up pipe of every poll loop in the project (any process).

A loop that polls sockets also polls a :class:`WakeupPipe`, which becomes readable when there is
something to look at besides the sockets:

- ``signals=True`` (the supervisor's loop, the health monitor's and the kubelet watcher's, through
  :class:`~sriovdp.launch.runtime.StopFlag`): registered with ``signal.set_wakeup_fd``, so the
  interpreter writes a signal's number into it when the signal arrives. Python retries ``poll()``
  after a handler ran (PEP 475), so without it a SIGTERM would only be noticed at the next
  timeout. Create it from the main thread, after installing the handlers.
- ``signals=False`` (a plugin worker's bus thread): another thread calls :meth:`wake`.
"""

from __future__ import annotations

import contextlib
import os
import signal


class WakeupPipe:
    """A non-blocking pipe written by signals, or by :meth:`wake`."""

    def __init__(self, signals: bool = True) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous: int | None = None
        if signals:
            self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def fileno(self) -> int:
        return self._read

    def wake(self) -> None:
        """Makes the pipe readable (from any thread); a full pipe is readable already."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def drain(self) -> list[int]:
        """Empties the pipe; returns what was written (signal numbers, oldest first)."""
        written: list[int] = []
        try:
            while data := os.read(self._read, 512):
                written.extend(data)
        except BlockingIOError:
            pass
        return written

    def close(self) -> None:
        if self._previous is not None:
            signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)
