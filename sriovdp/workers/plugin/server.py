"""The gRPC server of one pool on a unix socket in the plugin directory (plugin worker process).

Every :meth:`PluginServer.start` serves on a fresh file name, ``<child>-<start-id>.sock``, after
removing stale sockets of the same pool (earlier runs of this worker, or our own previous socket);
the kubelet only ever learns the newest name. The servicer outlives servers: re-serving after a
kubelet restart keeps the device table and health as they are.

Servers are ``grpc.aio`` servers (grpcio) on the worker's one asyncio event loop, which runs for
the life of the worker in a thread of its own (:class:`EventLoopThread`, thread name
``grpc-loop``); the registrar's Register calls run on the same loop. The main thread keeps its
action loop and signal handling and drives servers through :meth:`EventLoopThread.call`. Every
grpc object is made on that loop, after the worker was forked (a zygote may import this module:
importing creates nothing). grpcio adds threads of its own when the first server starts: the
``grpc.aio`` completion-queue poller (a Python thread that blocks in C-core with no deadline and
hands events to the loop) and C-core's timer, thread-pool (``event_engine``) and ``lifeguard``
threads, which wake about once a second each while idle.

A request message that does not parse is refused with INTERNAL (as grpc-go refuses one) and
logged once as a warning (:class:`RefuseMalformed`); grpcio alone would answer UNKNOWN and log a
traceback that blames the servicer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import stat
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from sriovdp.proto import api_pb2_grpc
from sriovdp.workers.plugin.servicer import DevicePluginServicer

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how long the main thread waits for the loop to start or stop a server
LOOP_CALL_TIMEOUT_S = 5.0
#: channel args of every server: one socket per name (no SO_REUSEPORT on a unix socket)
SERVER_OPTIONS = (("grpc.so_reuseport", 0),)


class EventLoopThread:
    """An asyncio loop in a daemon thread; other threads run coroutines on it and wait."""

    def __init__(self, name: str = "grpc-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = LOOP_CALL_TIMEOUT_S) -> T:
        """Runs ``coro`` on the loop and returns its result (raises what it raises)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 1.0) -> None:
        """Stops the loop and closes it (tasks still pending are dropped with the process)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()  # its selector and self-pipe


class Malformed:
    """What :class:`RefuseMalformed`'s deserializers return for bytes that do not parse."""

    __slots__ = ("details",)

    def __init__(self, details: str) -> None:
        self.details = details


Behaviour = Callable[[Any, Any], Awaitable[Any]]


class RefuseMalformed(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every handler: a request that does not parse becomes :class:`Malformed` and ends
    the call with INTERNAL naming the message type, logged once; the servicer never sees it.
    Wrapped handlers are kept per method (one dict lookup per call)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler
        method: str = details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, _tolerant(method, handler))
            self._wrapped[method] = cached
        return cached[1]


def _tolerant(method: str, handler: Any) -> Any:
    """``handler`` with a deserializer that never raises and a behaviour that refuses what did
    not parse."""
    parse = handler.request_deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # protobuf's DecodeError names the message type
            return Malformed(f"cannot parse the request: {exc}")

    def guarded(behaviour: Behaviour) -> Behaviour:
        async def call(request: Any, context: Any) -> Any:
            if isinstance(request, Malformed):
                log.warning("refused a malformed request on %s: %s", method, request.details)
                await context.abort(grpc.StatusCode.INTERNAL, request.details)
            return await behaviour(request, context)

        return call

    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            guarded(handler.unary_stream),
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        guarded(handler.unary_unary),
        request_deserializer=deserialize,
        response_serializer=handler.response_serializer,
    )


@dataclass(frozen=True, slots=True)
class Serving:
    """One running server: its socket file name (relative to the plugin dir) and inode."""

    name: str
    path: Path
    inode: int


#: hex digits of the start id in socket names; the exact pattern keeps ``pool`` from matching
#: the sockets of a pool named ``pool-x``
START_ID_HEX = 8


def is_own_socket_name(child: str, name: str) -> bool:
    """Whether ``name`` is ``<child>-<start-id>.sock`` (a socket of this pool, any start)."""
    head, sep, tail = name.rpartition("-")
    return (
        sep == "-"
        and head == child
        and len(tail) == START_ID_HEX + 5
        and tail.endswith(".sock")
        and all(c in "0123456789abcdef" for c in tail[:START_ID_HEX])
    )


def remove_stale(plugin_dir: Path, child: str, keep: str | None = None) -> list[str]:
    """Removes this pool's socket files (not regular files, not other pools'); returns names."""
    removed = []
    # os.listdir and the exact match of is_own_socket_name: no glob pattern to build per worker
    for name in os.listdir(plugin_dir):
        if name == keep or not is_own_socket_name(child, name):
            continue
        path = plugin_dir / name
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
                removed.append(path.name)
        except FileNotFoundError:
            pass
    return removed


class PluginServer:
    """Starts and stops the gRPC servers of one pool on ``loop`` (called from the main thread).

    The ``grpc.aio.Server`` objects live in a dict that only the loop touches: the last reference
    to a stopped server is dropped on the loop thread. grpcio shuts its asyncio machinery down
    when its last server or channel is freed, and doing that from another thread while the loop
    runs races with the loop (an ``EBADF`` error logged from its poller callback).
    """

    def __init__(
        self,
        plugin_dir: Path,
        child: str,
        servicer: DevicePluginServicer,
        loop: EventLoopThread,
    ) -> None:
        self.plugin_dir = plugin_dir
        self.child = child
        self.servicer = servicer
        self.current: Serving | None = None
        self._loop = loop
        self._interceptor = RefuseMalformed()
        #: socket name -> its grpc.aio.Server; touched only on the loop
        self._servers: dict[str, Any] = {}

    def start(self) -> Serving:
        """Serves on a fresh socket, then stops the previous server (if any). Raises on failure."""
        self.servicer.attach(self._loop.loop)
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        previous = self.current
        stale = remove_stale(self.plugin_dir, self.child)
        if stale:
            log.info("removed stale sockets of this pool: %s", ", ".join(stale))
        name = f"{self.child}-{secrets.token_hex(START_ID_HEX // 2)}.sock"
        path = self.plugin_dir / name
        self._loop.call(self._serve(name, path))
        self.current = Serving(name, path, path.stat().st_ino)
        if previous is not None:
            self._loop.call(self._stop_server(previous.name, 0))
        log.info("serving on %s", path)
        return self.current

    async def _serve(self, name: str, path: Path) -> None:
        """On the loop: a new server on ``path``, started (OSError naming the path if not)."""
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=(self._interceptor,))
        api_pb2_grpc.add_DevicePluginServicer_to_server(self.servicer, server)  # type: ignore[no-untyped-call]
        try:
            port = server.add_insecure_port(f"unix:{path}")
        except RuntimeError as exc:
            port, why = 0, f": {exc}"  # the text only: its traceback holds the server
        else:
            why = ""
        if port == 0:
            await server.stop(None)
            del server  # freed here, on the loop
            raise OSError(f"cannot bind unix socket {path}{why}")
        await server.start()
        self._servers[name] = server

    async def _stop_server(self, name: str, grace: float | None) -> None:
        """On the loop: stops the server of socket ``name`` and drops it (here, on the loop)."""
        server = self._servers.pop(name, None)
        if server is not None:
            await server.stop(grace)

    def socket_intact(self) -> bool:
        """Whether our current socket file still exists and is ours (same inode)."""
        cur = self.current
        if cur is None:
            return False
        try:
            return os.stat(cur.path).st_ino == cur.inode
        except OSError:
            return False

    def stop(self, grace: float = 0.5) -> None:
        """Stops serving: running calls get ``grace`` seconds, then are cancelled. grpcio removes
        the socket file of a server it stops; whatever is left at our path is removed too, but
        only if it is still ours (same inode)."""
        cur, self.current = self.current, None
        if cur is None:
            return
        try:
            self._loop.call(self._stop_server(cur.name, grace), timeout=grace + LOOP_CALL_TIMEOUT_S)
        except Exception as exc:  # stopping anyway: the socket goes, the process ends
            log.warning("server did not stop cleanly: %r", exc)
        try:
            if os.stat(cur.path).st_ino == cur.inode:
                os.unlink(cur.path)
        except OSError:
            pass
