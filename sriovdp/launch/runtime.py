"""Process plumbing every child uses: parent-death signal, stop flag, memory release (every child
process)."""

from __future__ import annotations

import argparse
import gc
import os
import select
import signal
import zlib
from pathlib import Path
from types import FrameType

import setproctitle

from sriovdp.launch.child import bind_life_to
from sriovdp.launch.wakeup import WakeupPipe
from sriovdp.shared import libc


def die_with_parent() -> None:
    """SIGTERM when the current parent exits. A child the supervisor started is bound to it
    already (:mod:`~sriovdp.launch.child`); this covers a worker started by hand or by a test."""
    bind_life_to(os.getppid())


#: the kernel's ``comm`` (``ps -e``, ``top``, OOM-killer lines) keeps 15 bytes
COMM_MAX = 15


def comm_for(name: str) -> str:
    """A ``comm`` of at most 15 bytes that tells two child names apart: ``sdp-<name>`` when it
    fits, else ``sdp<4 hex digits of a hash of name>-<the last 7 characters>``
    (``intel-com_sriov_net_A`` -> ``sdp3c1e-_net_A``): two pools whose names differ only in
    what the kernel cuts off still show different comms."""
    short = f"sdp-{name}"
    if len(short.encode()) <= COMM_MAX:
        return short
    return f"sdp{zlib.crc32(name.encode()) & 0xFFFF:04x}-{name[-7:]}"


def name_process(title: str, comm: str) -> None:
    """What ``ps`` shows: ``title`` as the command line (``ps -ef``, ``top -c``), ``comm`` as the
    process name (``ps -e``, ``top``, the kernel's log lines), cut to 15 bytes."""
    setproctitle.setproctitle(title)
    setproctitle.setthreadtitle(comm.encode()[:COMM_MAX].decode(errors="ignore"))


def release_memory() -> None:
    """Start-up garbage back to the kernel, once the process is ready: ``gc.collect()`` then
    glibc's ``malloc_trim(0)`` (the free pages of every malloc arena, not only the heap's top).
    In a child of the zygote this also drops the freed-but-still-mapped pages it copied."""
    gc.collect()
    libc.malloc_trim()


class StopFlag:
    """Set by SIGTERM/SIGINT; main loops wait on it, or poll :meth:`fileno` with their sockets.

    The handler takes no lock: it sets a plain attribute, and the interpreter writes a byte into
    a :class:`~sriovdp.launch.wakeup.WakeupPipe` when any signal arrives. A Python handler runs
    in the main thread between two bytecodes of whatever that thread was doing, so
    ``threading.Event.set()`` in it deadlocks when the main thread was inside ``Event.wait()``
    holding the event's own lock (a worker that never stops, and after PR_SET_PDEATHSIG an orphan
    that nobody ever SIGKILLs).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._set = False
        self._wakeup: WakeupPipe | None = None

    def install(self, *signals: int) -> None:
        """Installs the handlers and the wake-up pipe; call from the main thread."""
        for sig in signals or (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        if self._wakeup is None:
            self._wakeup = WakeupPipe()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def fileno(self) -> int:
        """Readable once a signal arrived (drain it with :meth:`drain`)."""
        assert self._wakeup is not None, "install() first"
        return self._wakeup.fileno()

    def drain(self) -> None:
        if self._wakeup is not None:
            self._wakeup.drain()

    def wait(self, timeout: float | None) -> bool:
        """True once set; else waits up to ``timeout`` seconds (None: for ever) for a signal."""
        if not self._set:
            select.select([self.fileno()], [], [], None if timeout is None else max(0.0, timeout))
            self.drain()
        return self._set

    def close(self) -> None:
        """Closes the pipe and gives the wake-up fd back (the handlers stay installed)."""
        if self._wakeup is not None:
            self._wakeup.close()
            self._wakeup = None


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
