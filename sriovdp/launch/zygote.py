"""The zygote: a preloaded, single-threaded spawner of workers (zygote process, and the first
moments of every child it or the exec spawner starts).

Role ``zygote`` (``python -m sriovdp.workers zygote --parent PID --requests FD --reports FD``):
started by the supervisor with ``posix_spawn``, it imports protobuf, h2, asyncio, pyzmq, msgpack and
the worker modules, rehearses a plugin worker and lays out the code it runs (:func:`preload`),
keeps none of their objects alive (no ZeroMQ context, event loop, server or thread: the rehearsal
joins what it started), and then forks one worker per request. Forked children share the
preloaded pages copy-on-write, which is the whole point: a pool costs a few MB instead of a fresh
interpreter. It never imports grpc: plugin workers speak gRPC with ``sriovdp.workers.grpcwire``
(pure Python on h2).

Protocol, one msgpack map per frame on two pipes:

- requests (supervisor -> zygote): ``{"op": "spawn", "id": int, "name": str, "entry": str,
  "argv": [str, ...]}``;
- reports (zygote -> supervisor): ``{"op": "ready", "pid": int}`` once preloaded;
  ``{"op": "spawned", "id": int, "pid": int}`` or ``{"op": "error", "id": int, "error": str}``;
  ``{"op": "exited", "pid": int, "status": int}`` (a raw wait status) for every child it reaps.

The zygote reaps its own children (``waitpid(-1, WNOHANG)`` on SIGCHLD) and nothing else does.
It exits when the request pipe closes or its parent dies (PR_SET_PDEATHSIG SIGKILL); its children
then get SIGTERM from their own PR_SET_PDEATHSIG.

``python -m sriovdp.launch.zygote exec PARENT ENTRY ARGV...`` is the exec spawner's launcher: it
arms PR_SET_PDEATHSIG against PARENT and runs ENTRY's ``main(argv)`` in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import importlib
import logging
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

import msgpack

from sriovdp.shared import libc
from sriovdp.launch.runtime import die_with_parent

log = logging.getLogger(__name__)

#: imported before the first fork; missing ones are skipped (a role may not be installed)
PRELOAD = (
    "asyncio",
    "google.protobuf",
    "h2.config",
    "h2.connection",
    "h2.events",
    "h2.exceptions",
    "hpack",
    "zmq",
    "msgpack",
    "sriovdp.proto.api_pb2",
    "sriovdp.workers.grpcwire.server",
    "sriovdp.workers.grpcwire.client",
    "sriovdp.shared.bus",
    "sriovdp.shared.messages",
    "sriovdp.shared.model",
    "sriovdp.shared.config",
    "sriovdp.shared.pools",
    "sriovdp.shared.logs",
    "sriovdp.workers.__main__",
    "sriovdp.workers.plugin.main",
    # everything a plugin worker imports after the fork: loaded once here, shared by every pool
    "sriovdp.workers.plugin.allocation",
    "sriovdp.workers.plugin.bus_link",
    "sriovdp.workers.plugin.cdi",
    "sriovdp.workers.plugin.devinfo",
    "sriovdp.workers.plugin.drivers",
    "sriovdp.workers.plugin.preferred",
    "sriovdp.workers.plugin.registration",
    "sriovdp.workers.plugin.rescan",
    "sriovdp.workers.plugin.server",
    "sriovdp.workers.plugin.servicer",
    "sriovdp.workers.plugin.state",
    "sriovdp.workers.kubelet_watcher",
    # no pyroute2 since the health monitor decodes netlink itself: cheap to share (~1 MB less)
    "sriovdp.workers.health_monitor",
)

#: glibc creates a malloc arena per thread (up to 8 x cores), each a few MB of dirty pages in a
#: worker with several threads (zmq's, the bus reader, the gRPC event loop); two are plenty
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """``mallopt(M_ARENA_MAX)``: inherited by forked children (the setting lives in memory)."""
    libc.mallopt(libc.M_ARENA_MAX, arenas)


def run_entry(entry: str, argv: Sequence[str]) -> int:
    """Imports ``entry`` and returns its ``main(argv)``; exceptions become exit code 1."""
    try:
        module = importlib.import_module(entry)
        sys.argv = [entry, *argv]
        code = module.main(list(argv))
        return int(code or 0)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1


def prepare_child(name: str, zygote_pid: int, close: Sequence[int]) -> None:
    """The first steps of every forked child: default signal handling, the zygote's descriptors
    in ``close`` closed, SIGTERM when the zygote exits, named ``sdp-<name>`` in ``ps``."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in close:
        with contextlib.suppress(OSError):
            os.close(fd)
    die_with_parent(signal.SIGTERM, expected_parent=zygote_pid)
    libc.set_thread_name(f"sdp-{name}")


class Zygote:
    """The zygote's loop: read requests, fork, reap, report. Single-threaded by construction."""

    def __init__(self, requests_fd: int, reports_fd: int) -> None:
        self.requests_fd = requests_fd
        self.reports_fd = reports_fd
        self.children: set[int] = set()
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def report(self, **frame: Any) -> None:
        data = msgpack.packb(frame, use_bin_type=True)
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.reports_fd, view)
            except BlockingIOError:
                select.select([], [self.reports_fd], [], 1.0)
                continue
            view = view[n:]

    def serve(self) -> int:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.report(op="ready", pid=os.getpid())
        while True:
            readable, _, _ = select.select([self.requests_fd, self._wake_r], [], [])
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
            self.reap()
            if self.requests_fd in readable:
                try:
                    data = os.read(self.requests_fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    return 0  # the supervisor closed the pipe (or died)
                self._unpacker.feed(data)
                for request in self._unpacker:
                    self.handle(request)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.report(op="exited", pid=pid, status=status)

    def handle(self, request: object) -> None:
        if not isinstance(request, dict) or request.get("op") != "spawn":
            return  # nothing else is defined; the supervisor is the only writer
        rid, name, entry, argv = (request.get(k) for k in ("id", "name", "entry", "argv"))
        if (
            not isinstance(rid, int)
            or not isinstance(name, str)
            or not isinstance(entry, str)
            or not isinstance(argv, list)
            or not all(isinstance(a, str) for a in argv)
        ):
            self.report(op="error", id=rid if isinstance(rid, int) else -1, error="bad request")
            return
        gc.freeze()  # what the zygote allocated since the last fork: shared, never collected
        zygote_pid = os.getpid()  # before the fork: in the child, getppid() may already be a reaper
        try:
            pid = os.fork()
        except OSError as exc:
            self.report(op="error", id=rid, error=f"fork: {exc}")
            return
        if pid == 0:
            self._become_child(zygote_pid, name, entry, argv)  # never returns
        self.children.add(pid)
        self.report(op="spawned", id=rid, pid=pid)

    def _become_child(self, zygote_pid: int, name: str, entry: str, argv: list[str]) -> None:
        code = 1
        try:
            fds = (self.requests_fd, self.reports_fd, self._wake_r, self._wake_w)
            prepare_child(name, zygote_pid, fds)
            code = run_entry(entry, argv)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def preload(modules: Sequence[str] = PRELOAD) -> list[str]:
    """Imports what children will need; returns the names that could not be imported.

    Only imports: no ZeroMQ context, gRPC channel or server, event loop, netlink socket or thread
    is made here (grpc's fork rules: a process may fork with grpc imported, not with grpc
    objects alive). ``gc.freeze()`` then moves everything imported into the permanent
    generation, so the collector in a child never walks (and so never copies) the shared pages.
    """
    limit_malloc_arenas()
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    gc.collect()
    gc.freeze()
    return missing


def main(argv: list[str]) -> int:
    """Role ``zygote``."""
    parser = argparse.ArgumentParser(prog="python -m sriovdp.workers zygote")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True, help="fd to read requests from")
    parser.add_argument("--reports", type=int, required=True, help="fd to write reports to")
    args = parser.parse_args(argv)
    # SIGKILL: the zygote holds nothing to clean up; its children get their own SIGTERM
    die_with_parent(signal.SIGKILL, expected_parent=args.parent)
    libc.set_thread_name("sdp-zygote")
    preload()
    try:
        return Zygote(args.requests, args.reports).serve()
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            return 0  # the supervisor is gone
        raise


def exec_child(argv: list[str]) -> int:
    """``exec PARENT ENTRY ARGV...``: the exec spawner's child, tied to its parent's life."""
    if len(argv) < 3 or argv[0] != "exec" or not argv[1].isdigit():
        print(
            "usage: python -m sriovdp.launch.zygote exec PARENT ENTRY [ARGV...]", file=sys.stderr
        )
        return 2
    die_with_parent(signal.SIGTERM, expected_parent=int(argv[1]))
    limit_malloc_arenas()
    return run_entry(argv[2], argv[3:])


if __name__ == "__main__":
    sys.exit(exec_child(sys.argv[1:]))
