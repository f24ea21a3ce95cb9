"""The gRPC server of one pool on a unix socket in the plugin directory (plugin worker process).

Every :meth:`PluginServer.start` serves on a fresh file name, ``<child>-<start-id>.sock``, after
removing stale sockets of the same pool (earlier runs of this worker, or our own previous socket);
the kubelet only ever learns the newest name. The servicer outlives servers: re-serving after a
kubelet restart keeps the device table and health as they are.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from sriovdp.proto import api_pb2_grpc
from sriovdp.workers.plugin.servicer import DevicePluginServicer

log = logging.getLogger(__name__)

#: threads per server: each open ListAndWatch stream holds one; the kubelet needs one or two
MAX_WORKERS = 16


@dataclass(frozen=True, slots=True)
class Serving:
    """One running server: its socket file name (relative to the plugin dir) and inode."""

    name: str
    path: Path
    inode: int
    server: grpc.Server


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
    for path in plugin_dir.glob(f"{child}-*.sock"):
        if path.name == keep or not is_own_socket_name(child, path.name):
            continue
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
                removed.append(path.name)
        except FileNotFoundError:
            pass
    return removed


class PluginServer:
    """Starts and stops the gRPC servers of one pool."""

    def __init__(self, plugin_dir: Path, child: str, servicer: DevicePluginServicer) -> None:
        self.plugin_dir = plugin_dir
        self.child = child
        self.servicer = servicer
        self.current: Serving | None = None

    def start(self) -> Serving:
        """Serves on a fresh socket, then stops the previous server (if any). Raises on failure."""
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        previous = self.current
        stale = remove_stale(self.plugin_dir, self.child)
        if stale:
            log.info("removed stale sockets of this pool: %s", ", ".join(stale))
        name = f"{self.child}-{secrets.token_hex(START_ID_HEX // 2)}.sock"
        path = self.plugin_dir / name
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="grpc"),
            options=[("grpc.so_reuseport", 0)],
        )
        api_pb2_grpc.add_DevicePluginServicer_to_server(self.servicer, server)  # type: ignore[no-untyped-call]
        if server.add_insecure_port(f"unix:{path}") == 0:
            raise OSError(f"cannot bind unix socket {path}")
        server.start()
        self.current = Serving(name, path, path.stat().st_ino, server)
        if previous is not None:
            previous.server.stop(grace=0)
        log.info("serving on %s", path)
        return self.current

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
        """Stops serving and removes our socket file (only if it is still ours)."""
        cur, self.current = self.current, None
        if cur is None:
            return
        event = cur.server.stop(grace=grace)
        event.wait(grace + 0.5)
        try:
            if os.stat(cur.path).st_ino == cur.inode:
                os.unlink(cur.path)
        except OSError:
            pass
