"""A plugin worker's life, rehearsed once in the zygote before it forks anything (zygote process).

Why: a forked worker copies every page on which it writes, and CPython 3.11 writes on everything
a worker touches, even objects it only reads: reference counts, code warm-up counters, caches that
fill on first use. The rehearsal finds out which code a worker runs, so that
:mod:`~sriovdp.workers.codelayout` can lay that code out together, and it fills the lazy caches
once in the zygote instead of once per worker (docs/benchmarks.md, "What a worker copies").

What runs: a plugin worker on a simulated node of 1 PF x 4 VFs in a private temporary directory,
against a kubelet played by a :mod:`~sriovdp.workers.grpcwire` server on the same asyncio code
the workers use: the worker serves, registers, answers GetDevicePluginOptions, ListAndWatch
(ended by the caller's deadline, as a restarting kubelet ends it), GetPreferredAllocation and
Allocate, then stops and removes its files. Logging goes through the same handler and formatter
types, into ``/dev/null``. Two ways:

- :func:`rehearse`, in this process (the zygote): a ``Worker`` built as ``main`` builds it, no
  bus, stopped through its action queue. It leaves nothing behind: every thread it started is
  joined, no descriptor, file or logging handler remains; otherwise :class:`RehearsalError`.
- :class:`Scout`, in a forked copy, under a profile function from the fork on: started the way
  the zygote starts a worker, the worker's real ``main`` on a bus (a real broker in the copy:
  a link flap, a kubelet state), stopped with SIGTERM. It reports the ids of the code objects
  that ran, which are this process's objects too.

Any failure only costs the memory saving, never a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import select
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, NoReturn

from sriovdp.shared import simnode
from sriovdp.shared.messages import KubeletSocketState, LinkState, Message

#: the rehearsal is stopped after this long, whatever it is waiting for
DEADLINE_S = 2.0
#: how long the rehearsing kubelet reads ListAndWatch before it hangs up
LIST_AND_WATCH_S = 0.02
#: code in these files is the rehearsal's own scaffolding, not something a worker runs
_SCAFFOLDING = (
    __file__,
    os.path.dirname(simnode.__file__),
    os.path.join(os.path.dirname(os.path.dirname(__file__)), "supervisor"),  # the broker
)

#: a rehearsal's scratch directory in $TMPDIR is ``<prefix><pid>-<random>``
SCRATCH_PREFIX = "sriovdp-rehearsal-"
_PLUGIN = "/v1beta1.DevicePlugin/"
_WORKERS_ENTRY = "sriovdp.workers.__main__"
#: the simulated node: one PF (scale_node's first, netdev scl0) with this many VFs
_PF = "0000:01:00.0"
_VFS = 4
_CHILD = "intel-com_rehearsal"


class RehearsalError(RuntimeError):
    """The rehearsal could not run, or left a thread behind (the zygote must not fork then)."""


class _Tracer:
    """Records each code object the first time a frame runs it (every thread)."""

    def __init__(self) -> None:
        self.codes: dict[int, CodeType] = {}

    def __call__(self, frame: FrameType, event: str, _arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            if id(code) not in self.codes and not code.co_filename.startswith(_SCAFFOLDING):
                self.codes[id(code)] = code

    def __enter__(self) -> _Tracer:
        sys.setprofile(self)
        threading.setprofile(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        sys.setprofile(None)
        threading.setprofile(None)


def rehearse(trace: bool = False) -> list[CodeType]:
    """Runs the rehearsal in this process; with ``trace``, returns the code objects the worker
    ran, in first-run order (else an empty list). A traced run leaves the code unspecialized:
    CPython 3.11 does not quicken code while a profile function is set."""
    tracer = _Tracer()
    with tracer if trace else contextlib.nullcontext():
        _rehearsal(scout=False)
    return list(tracer.codes.values())


def _rehearsal(scout: bool) -> None:
    """A worker's life in a private temp dir, logging into /dev/null; leaves nothing behind."""
    before = set(threading.enumerate())
    saved_stderr = sys.stderr
    root_logger = logging.getLogger()
    saved_handlers, saved_level = list(root_logger.handlers), root_logger.level
    try:
        if not scout:  # the zygote does it; the scout, running alongside, would do it again
            remove_stale_scratch()
        with (
            tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch,
            open(os.devnull, "w") as devnull,
        ):
            sys.stderr = devnull
            _run_worker(Path(scratch), scout)
    except RehearsalError:
        raise
    except Exception as exc:
        raise RehearsalError(f"the rehearsal failed: {exc!r}") from exc
    finally:
        sys.stderr = saved_stderr
        for handler in list(root_logger.handlers):
            root_logger.removeHandler(handler)
            handler.close()
        for handler in saved_handlers:
            root_logger.addHandler(handler)
        root_logger.setLevel(saved_level)
        _join_new_threads(before)


class Scout:
    """A rehearsal under the tracer in a forked copy of this process, which reports the ``id()``
    of each code object that ran there, in first-run order.

    The copy starts the way the zygote starts a worker, traced from the fork on (the fork's own
    handlers, :func:`~sriovdp.workers.zygote.prepare_child`, the worker's ``main``), and its
    worker runs on a bus: a real broker tells it its link went down and up. The copy holds the
    same objects at the same addresses, so the ids name this process's code objects, and this
    process stays untraced (its own rehearsal, which may run meanwhile, leaves its code
    specialized). Fork-safe only where fork is (no second thread, no live grpc or zmq state), as
    in the zygote before its first fork.
    """

    def __init__(self) -> None:
        parent = os.getpid()
        tracer = _Tracer()
        try:
            self._read_end, write_end = os.pipe2(os.O_CLOEXEC)
            with tracer:  # the child inherits the profile function with the rest of this thread
                self.pid = os.fork()
                if self.pid == 0:
                    _scout(tracer, parent, self._read_end, write_end)  # never returns
        except OSError as exc:  # out of descriptors or processes: no saving, no crash
            with contextlib.suppress(AttributeError, OSError):
                os.close(self._read_end)
                os.close(write_end)
            raise RehearsalError(f"cannot start the scout: {exc}") from exc
        os.close(write_end)

    def cancel(self) -> None:
        """Kills and reaps the scout (its report is not needed any more)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.close(self._read_end)
        os.waitpid(self.pid, 0)

    def ids(self, timeout: float = DEADLINE_S + 2.0) -> list[int]:
        """Waits for the scout's report (and reaps it); raises RehearsalError if it failed."""
        chunks = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._read_end], [], [], left)[0]:
                    os.kill(self.pid, signal.SIGKILL)
                    raise RehearsalError(f"the scout took longer than {timeout:g} s")
                chunk = os.read(self._read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as exc:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            raise RehearsalError(f"cannot read the scout's report: {exc}") from exc
        finally:
            os.close(self._read_end)
            _, status = os.waitpid(self.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RehearsalError(f"the scout failed ({os.waitstatus_to_exitcode(status)})")
        return decode_ids(b"".join(chunks))


def decode_ids(data: bytes) -> list[int]:
    """The scout's report: little-endian 64-bit ids; a partial last one is dropped. Any value is
    safe: :func:`~sriovdp.workers.codelayout.code_objects` keeps only ids of code objects."""
    whole = len(data) // 8
    return list(struct.unpack(f"<{whole}Q", data[: whole * 8]))


def remove_stale_scratch(tmp: str | None = None) -> list[str]:
    """Removes the scratch directories of rehearsals whose process is gone (a zygote killed while
    it rehearsed: its ``finally`` never ran); returns their names. Only ours (same uid), only
    those whose pid no longer exists."""
    tmp = tmp or tempfile.gettempdir()
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(tmp):
            pid_text = entry.name.removeprefix(SCRATCH_PREFIX).partition("-")[0]
            if not entry.name.startswith(SCRATCH_PREFIX) or not pid_text.isdigit():
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid != os.getuid() or _alive(int(pid_text)):
                    continue
                shutil.rmtree(entry.path)
                removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scout() -> list[int]:
    """:class:`Scout` started and waited for."""
    return Scout().ids()


def _scout(tracer: _Tracer, parent: int, read_end: int, write_end: int) -> NoReturn:
    """The scout's whole life: report the ids, then leave without the parent's cleanup."""
    from sriovdp.workers import zygote

    code = 1
    try:
        # nothing of the zygote's but stdio: its request and report pipes must not outlive it here
        inherited = [int(fd) for fd in os.listdir("/proc/self/fd")]
        zygote.prepare_child(
            "rehearsal", parent, [fd for fd in inherited if fd > 2 and fd != write_end]
        )
        _rehearsal(scout=True)
        sys.setprofile(None)
        threading.setprofile(None)
        ids = list(tracer.codes)
        view = memoryview(struct.pack(f"<{len(ids)}Q", *ids))
        while view:
            view = view[os.write(write_end, view) :]
        code = 0
    finally:
        os._exit(code)


def _join_new_threads(before: set[threading.Thread]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    for thread in threading.enumerate():
        if thread not in before:
            thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in threading.enumerate() if t not in before]
    if left:
        raise RehearsalError(f"threads still running after the rehearsal: {', '.join(left)}")


class _Broker:
    """The supervisor's broker on the rehearsal's run dir, polled by a thread of its own; other
    threads publish through :meth:`send` (a ZeroMQ socket belongs to one thread)."""

    def __init__(self, run_dir: Path) -> None:
        import zmq

        from sriovdp.supervisor.broker import Broker

        run_dir.mkdir(mode=0o700)
        self.run_dir = run_dir
        self._ctx = zmq.Context(io_threads=1)
        self._broker = Broker(self._ctx, run_dir, src="rehearsal")
        self._outbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="rehearsal-broker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import zmq

        poller = zmq.Poller()
        for sock in (self._broker.pull, self._broker.xpub):
            poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        while not self._stopping:
            ready = dict(poller.poll())
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
            while not self._outbox.empty():
                self._broker.publish(self._outbox.get())
            if self._broker.pull in ready:
                self._broker.handle_pull()
            if self._broker.xpub in ready:
                self._broker.handle_xpub()

    def send(self, message: Message) -> None:
        self._outbox.put(message)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")
        self._thread.join(DEADLINE_S)
        if not self._thread.is_alive():
            self._broker.close()
            self._ctx.term()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _run_worker(scratch: Path, scout: bool) -> None:
    """A worker and the kubelet's side of the conversation. In this process: a ``Worker`` built
    as ``main`` builds it, stopped through its action queue. In the scout: the worker's real
    ``main`` (signal handlers and all) on a bus, stopped with SIGTERM as the supervisor stops it."""
    from sriovdp.proto import api_pb2
    from sriovdp.shared import logs
    from sriovdp.shared.config import load_config
    from sriovdp.workers.grpcwire.client import unary_call
    from sriovdp.workers.grpcwire.methods import service_methods
    from sriovdp.workers.grpcwire.server import Server
    from sriovdp.workers.grpcwire.status import RpcError
    from sriovdp.workers.plugin import main as plugin_main
    from sriovdp.workers.plugin.server import EventLoopThread

    simnode.scale_node(scratch / "sys", 1, _VFS)
    (scratch / "proc" / "net").mkdir(parents=True)
    plugins = scratch / "plugins"
    plugins.mkdir()
    config_file = scratch / "config.json"
    pool_config = {"resourceName": "rehearsal", "selectors": {"pfNames": ["scl0"]}}
    config_file.write_text(json.dumps({"resourceList": [pool_config]}))
    argv = ["--name", _CHILD, "--config-file", str(config_file)]
    argv += ["--sysfs-root", str(scratch / "sys"), "--proc-root", str(scratch / "proc")]
    argv += ["--plugin-dir", str(plugins), "--devinfo-dir", str(scratch / "devinfo")]
    argv += ["--cdi-dir", str(scratch / "cdi")]
    broker = _Broker(scratch / "run") if scout else None
    if broker is not None:
        argv += ["--run-dir", str(broker.run_dir), "--heartbeat-interval", "0.02"]
        broker.send(_link("UP"))  # retained: the worker serves as soon as it subscribes
        from sriovdp.workers import zygote

        def stop() -> None:
            os.kill(os.getpid(), signal.SIGTERM)

        def run() -> int:
            return zygote.run_entry(_WORKERS_ENTRY, ["plugin", *argv])

    else:
        args = plugin_main.parse_args(argv)
        logs.setup(args.name, "info", "text")
        config = load_config(args.config_file, args.resource_prefix)
        pool = config.pool(args.name)
        if pool is None:
            raise RehearsalError(f"no pool {_CHILD} in the rehearsal's own config")
        worker = plugin_main.Worker(args, config, pool)

        def stop() -> None:
            worker.actions.put(("stop",))

        run = worker.run

    async def play_kubelet(endpoint: str) -> None:
        path = plugins / endpoint
        empty = api_pb2.Empty()
        try:
            options = _PLUGIN + "GetDevicePluginOptions"
            await unary_call(path, options, empty, api_pb2.DevicePluginOptions, DEADLINE_S)
            # the stream never ends by itself: the caller's deadline hangs up on it
            with contextlib.suppress(RpcError):
                watch = _PLUGIN + "ListAndWatch"
                await unary_call(path, watch, empty, api_pb2.ListAndWatchResponse, LIST_AND_WATCH_S)
            if broker is not None:  # a link flap, then a kubelet restart, as the bus reports them
                for message in (_link("DOWN"), _link("UP"), _kubelet(plugins)):
                    broker.send(message)
                    await asyncio.sleep(0.02)
            ids = [simnode.vf_address(_PF, i) for i in range(_VFS)]
            preferred = api_pb2.PreferredAllocationRequest(
                container_requests=[
                    api_pb2.ContainerPreferredAllocationRequest(
                        available_deviceIDs=ids, allocation_size=1
                    )
                ]
            )
            prefer = _PLUGIN + "GetPreferredAllocation"
            await unary_call(
                path, prefer, preferred, api_pb2.PreferredAllocationResponse, DEADLINE_S
            )
            allocate = api_pb2.AllocateRequest(
                container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=ids[:1])]
            )
            await unary_call(
                path, _PLUGIN + "Allocate", allocate, api_pb2.AllocateResponse, DEADLINE_S
            )
        finally:
            stop()

    class Kubelet:
        """The Registration service: each Register starts the kubelet's calls back."""

        def __init__(self) -> None:
            self.calls: set[asyncio.Task[None]] = set()

        async def Register(self, request: Any, _context: Any) -> Any:
            task = asyncio.get_running_loop().create_task(play_kubelet(request.endpoint))
            self.calls.add(task)
            task.add_done_callback(self.calls.discard)
            return api_pb2.Empty()

    async def serve(kubelet: Kubelet) -> Server:
        service = api_pb2.DESCRIPTOR.services_by_name["Registration"]
        server = Server(service_methods(service, kubelet))
        await server.start(plugins / "kubelet.sock")
        asyncio.get_running_loop().call_later(DEADLINE_S, stop)
        return server

    loop = EventLoopThread(name="rehearsal-kubelet")
    try:
        server = loop.call(serve(Kubelet()))
        run()
        loop.call(server.stop(grace=0))
    finally:
        loop.stop(timeout=DEADLINE_S)
        if broker is not None:
            broker.close()


def _link(operstate: str) -> LinkState:
    up = operstate == "UP"
    return LinkState(ifname="scl0", ifindex=2, operstate=operstate, carrier=up, present=True)


def _kubelet(plugins: Path) -> KubeletSocketState:
    inode = (plugins / "kubelet.sock").stat().st_ino
    return KubeletSocketState(present=True, inode=inode, generation=2)
