"""Process plumbing every child uses: parent-death signal, stop flag, memory release (every child
process)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import select
import signal
from pathlib import Path
from types import FrameType

from sriovdp.shared import libc


def die_with_parent(sig: int = signal.SIGTERM, expected_parent: int | None = None) -> None:
    """Asks the kernel to send ``sig`` when the parent exits; exits now if it already has.

    ``expected_parent`` is the parent pid seen before the exec or fork; if ``getppid()`` differs
    after arming, the parent died in between and we leave at once (no orphans holding sockets).
    """
    libc.set_parent_death_signal(sig)  # not Linux: the getppid() checks of the main loops remain
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(0)


def release_memory() -> None:
    """Start-up garbage back to the kernel, once the process is ready: ``gc.collect()`` then
    glibc's ``malloc_trim(0)`` (the free pages of every malloc arena, not only the heap's top).
    In a child of the zygote this also drops the freed-but-still-mapped pages it copied."""
    gc.collect()
    libc.malloc_trim()


class StopFlag:
    """Set by SIGTERM/SIGINT; main loops wait on it.

    The handler takes no lock: it sets a plain attribute and writes a byte to a pipe that
    :meth:`wait` selects on. A Python handler runs in the main thread between two bytecodes of
    whatever that thread was doing, so ``threading.Event.set()`` in it deadlocks when the main
    thread was inside ``Event.wait()`` holding the event's own lock (a worker that never stops,
    and after PR_SET_PDEATHSIG an orphan that nobody ever SIGKILLs).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._set = False
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install(self, *signals: int) -> None:
        for sig in signals or (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum
        self._set = True
        with contextlib.suppress(BlockingIOError):  # a full pipe: wait() wakes up anyway
            os.write(self._write, b"x")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None) -> bool:
        """True once set; else waits up to ``timeout`` seconds (None: for ever) for the signal."""
        if not self._set:
            # the pipe is never drained: once written, every later wait returns at once
            select.select([self._read], [], [], None if timeout is None else max(0.0, timeout))
        return self._set

    def close(self) -> None:
        """Closes the pipe (the flag must no longer be installed as a handler)."""
        os.close(self._read)
        os.close(self._write)


def infra_arg_parser(role: str, default_heartbeat: float) -> argparse.ArgumentParser:
    """Options every infrastructure child takes (health monitor, kubelet watcher); the role adds
    its own. The supervisor passes ``--heartbeat-interval`` so its timeout and ours agree."""
    parser = argparse.ArgumentParser(prog=f"python -m sriovdp.workers {role}")
    parser.add_argument("--name", default=role)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--heartbeat-interval", type=float, default=default_heartbeat, help=argparse.SUPPRESS
    )
    return parser
