"""The zygote: a preloaded, single-threaded process that forks workers (zygote process).

Role ``zygote`` (``python -m sriovdp.workers zygote --parent PID --requests FD --reports FD``):
started by the supervisor with ``posix_spawn``, it imports what the workers need (:data:`PRELOAD`:
grpcio, protobuf, pyzmq, msgpack and the worker modules), runs ``gc.freeze()`` and then forks one
worker per request. It creates no thread, event loop, ZeroMQ context, gRPC object or netlink
socket (grpc's fork rules: fork with grpc imported, never with grpc objects alive); forked
workers share the preloaded pages copy-on-write and make their own sockets after the fork.

The zygote is not a single point of failure. Each worker is forked through a short-lived
intermediate process that exits at once, so the worker is re-parented to the supervisor (a child
subreaper), which reaps it and sees its heartbeats as for any child. Killing the zygote leaves
every worker running; the supervisor starts a new zygote for the next spawn.

Protocol, one msgpack map per frame on two pipes:

- requests (supervisor -> zygote): ``{"op": "spawn", "id": int, "name": str, "entry": str,
  "argv": [str, ...]}``;
- reports (zygote -> supervisor): ``{"op": "ready", "pid": int}`` once preloaded;
  ``{"op": "spawned", "id": int, "pid": int}`` or ``{"op": "error", "id": int, "error": str}``.

It exits when the request pipe closes, or when the supervisor dies (PR_SET_PDEATHSIG SIGKILL).
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
import struct
import sys
from collections.abc import Sequence
from typing import Any

import msgpack

from sriovdp.launch import runtime
from sriovdp.launch.child import bind_life_to, prepare_forked_child, run_entry

log = logging.getLogger(__name__)

#: imported before the first fork, shared copy-on-write by every worker; a name that does not
#: import is reported by :func:`preload` (a test requires there are none)
PRELOAD = (
    "asyncio",
    "google.protobuf",
    "grpc",
    "grpc.aio",
    "zmq",
    "msgpack",
    "sriovdp.proto.api_pb2",
    "sriovdp.proto.api_pb2_grpc",
    "sriovdp.shared.bus",
    "sriovdp.shared.messages",
    "sriovdp.shared.model",
    "sriovdp.shared.config",
    "sriovdp.shared.pools",
    "sriovdp.shared.logs",
    "sriovdp.workers.__main__",
    "sriovdp.workers.plugin.main",
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
    # not the health monitor: pyroute2 is needed by that one process only
)

_PID = struct.Struct("=i")


def preload(modules: Sequence[str] = PRELOAD) -> list[str]:
    """Imports what children will need; returns the names that could not be imported.

    Only imports. ``gc.freeze()`` then moves everything into the permanent generation, so the
    collector in a child never walks (and so never copies) the shared objects.
    """
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    gc.collect()
    gc.freeze()
    return missing


class Zygote:
    """The zygote's loop: read a request, fork, report. Single-threaded by construction."""

    def __init__(self, supervisor: int, requests_fd: int, reports_fd: int) -> None:
        self.supervisor = supervisor
        self.requests_fd = requests_fd
        self.reports_fd = reports_fd
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)

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
        # the supervisor decides when we stop: a terminal's Ctrl-C or a HUP is not for us
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.report(op="ready", pid=os.getpid())
        while True:
            try:
                data = os.read(self.requests_fd, 65536)
            except InterruptedError:
                continue
            if not data:
                return 0  # the supervisor closed the pipe (or died)
            self._unpacker.feed(data)
            for request in self._unpacker:
                self.handle(request)

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
        try:
            pid = self.fork_worker(name, entry, argv)
        except OSError as exc:
            self.report(op="error", id=rid, error=f"fork: {exc}")
            return
        self.report(op="spawned", id=rid, pid=pid)

    def fork_worker(self, name: str, entry: str, argv: list[str]) -> int:
        """Forks an intermediate that forks the worker, hands its pid back and exits; returns the
        worker's pid. The worker then belongs to the supervisor, not to us."""
        gc.freeze()  # what the zygote allocated since the last fork: shared, never collected
        pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
        try:
            intermediate = os.fork()
        except OSError:
            os.close(pid_r)
            os.close(pid_w)
            raise
        if intermediate == 0:
            os.close(pid_r)
            self._intermediate(pid_w, name, entry, argv)  # never returns
        os.close(pid_w)
        try:
            data = b""
            while len(data) < _PID.size:
                chunk = os.read(pid_r, _PID.size - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(pid_r)
            _, status = os.waitpid(intermediate, 0)
        if len(data) != _PID.size:
            raise OSError(errno.ECHILD, f"intermediate ended ({status:#x}) without a worker pid")
        (pid,) = _PID.unpack(data)
        if pid < 0:
            raise OSError(-pid, os.strerror(-pid))
        return int(pid)

    def _intermediate(self, pid_w: int, name: str, entry: str, argv: list[str]) -> None:
        code = 0
        try:
            try:
                worker = os.fork()
            except OSError as exc:
                os.write(pid_w, _PID.pack(-(exc.errno or errno.EAGAIN)))
                code = 1
            else:
                if worker == 0:
                    os.close(pid_w)
                    self._become_worker(name, entry, argv)  # never returns
                try:
                    os.write(pid_w, _PID.pack(worker))
                except OSError:
                    # the zygote is gone: nobody will tell the supervisor about this worker
                    os.kill(worker, signal.SIGKILL)
                    code = 1
        finally:
            os._exit(code)

    def _become_worker(self, name: str, entry: str, argv: list[str]) -> None:
        code = 1
        try:
            prepare_forked_child(name, self.supervisor, (self.requests_fd, self.reports_fd))
            code = run_entry(entry, argv)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def main(argv: list[str]) -> int:
    """Role ``zygote``."""
    parser = argparse.ArgumentParser(prog="python -m sriovdp.workers zygote")
    parser.add_argument("--parent", type=int, required=True, help="the supervisor's pid")
    parser.add_argument("--requests", type=int, required=True, help="fd to read requests from")
    parser.add_argument("--reports", type=int, required=True, help="fd to write reports to")
    args = parser.parse_args(argv)
    # SIGKILL: the zygote holds nothing to clean up, and its workers are not its children
    bind_life_to(args.parent, signal.SIGKILL)
    runtime.name_process("sriov-dp zygote", "sdp-zygote")
    missing = preload()
    if missing:
        log.warning("zygote: could not preload %s", ", ".join(missing))
    try:
        return Zygote(args.parent, args.requests, args.reports).serve()
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            return 0  # the supervisor is gone
        raise
