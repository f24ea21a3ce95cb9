"""The gRPC server of one pool on a unix socket in the plugin directory (plugin worker process).

Every :meth:`PluginServer.start` serves on a fresh file name, ``<child>-<start-id>.sock``, after
removing stale sockets of the same pool (earlier runs of this worker, or our own previous socket);
the kubelet only ever learns the newest name. The servicer outlives servers: re-serving after a
kubelet restart keeps the device table and health as they are.

Servers are :class:`~sriovdp.workers.grpcwire.server.Server` instances (pure-Python gRPC over
``h2``, no grpcio C-core: each idle C-core server cost ~2 ms CPU per 10 s in its own threads) on
one asyncio event loop that runs, for the life of the worker, in a thread of its own
(:class:`EventLoopThread`, thread name ``grpc-loop``); the main thread keeps its action loop and
signal handling and drives the servers through :meth:`EventLoopThread.call`. Idle, the loop thread
blocks in ``epoll_wait`` without a deadline, with open ListAndWatch streams or without.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import stat
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sriovdp.proto import api_pb2
from sriovdp.workers.grpcwire.methods import Method, service_methods
from sriovdp.workers.grpcwire.server import Server
from sriovdp.workers.plugin.servicer import DevicePluginServicer

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how long the main thread waits for the loop to start or stop a server
LOOP_CALL_TIMEOUT_S = 5.0
#: the service the kubelet calls us on
SERVICE = api_pb2.DESCRIPTOR.services_by_name["DevicePlugin"]


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


@dataclass(frozen=True, slots=True)
class Serving:
    """One running server: its socket file name (relative to the plugin dir) and inode."""

    name: str
    path: Path
    inode: int
    server: Server


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
    # os.listdir, not Path.glob: a glob compiles a pattern in every forked worker (~0.25 MB of
    # copied pages each); is_own_socket_name is the exact match anyway
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
    """Starts and stops the gRPC servers of one pool (called from the main thread)."""

    def __init__(self, plugin_dir: Path, child: str, servicer: DevicePluginServicer) -> None:
        self.plugin_dir = plugin_dir
        self.child = child
        self.servicer = servicer
        self.current: Serving | None = None
        self._loop: EventLoopThread | None = None
        self._methods: list[Method] = service_methods(SERVICE, servicer)

    def start(self) -> Serving:
        """Serves on a fresh socket, then stops the previous server (if any). Raises on failure."""
        if self._loop is None:
            self._loop = EventLoopThread()
            self.servicer.attach(self._loop.loop)
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        previous = self.current
        stale = remove_stale(self.plugin_dir, self.child)
        if stale:
            log.info("removed stale sockets of this pool: %s", ", ".join(stale))
        name = f"{self.child}-{secrets.token_hex(START_ID_HEX // 2)}.sock"
        path = self.plugin_dir / name
        server = self._loop.call(self._serve(path))
        self.current = Serving(name, path, path.stat().st_ino, server)
        if previous is not None:
            self._loop.call(previous.server.stop(grace=0))
        log.info("serving on %s", path)
        return self.current

    async def _serve(self, path: Path) -> Server:
        """On the loop: a new server on ``path``, started (OSError naming the path if not)."""
        server = Server(self._methods)
        await server.start(path)
        return server

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
        """Stops serving, removes our socket file (only if it is still ours), ends the loop."""
        cur, self.current = self.current, None
        loop, self._loop = self._loop, None
        if cur is not None and loop is not None:
            try:
                loop.call(cur.server.stop(grace=grace), timeout=grace + 0.5)
            except Exception as exc:  # stopping anyway: the socket goes, the process ends
                log.warning("server did not stop cleanly: %r", exc)
        if cur is not None:
            try:
                if os.stat(cur.path).st_ino == cur.inode:
                    os.unlink(cur.path)
            except OSError:
                pass
        if loop is not None:
            loop.stop()
