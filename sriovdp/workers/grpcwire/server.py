"""A gRPC server on a unix socket, in pure Python over ``h2`` (plugin worker process, on the
asyncio loop that calls :meth:`Server.start`).

One listener, one :class:`~sriovdp.workers.grpcwire.connection.Connection` per accepted client;
every handler runs as a task on the same loop. Idle, the server is a listening socket and open
connections registered with the loop's selector: no thread, no timer, no wake-up.

:meth:`Server.stop` is graceful for ``grace`` seconds: it stops accepting, sends every client a
GOAWAY (no new streams), lets running handlers finish, then cancels the rest (their clients get
UNAVAILABLE) and closes the connections. It leaves the socket file to the caller, who knows
whether the file at that path is still ours.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable

import h2.config

from sriovdp.workers.grpcwire.connection import Connection
from sriovdp.workers.grpcwire.framing import DEFAULT_MAX_MESSAGE
from sriovdp.workers.grpcwire.methods import Method

log = logging.getLogger(__name__)

#: pending connections the kernel keeps for us (the kubelet opens one or two)
BACKLOG = 64
#: after cancelling the handlers still running at the end of the grace period, how long stop()
#: waits for them to unwind (their ``finally`` blocks)
CANCEL_WAIT_S = 1.0


class Server:
    """Serves ``methods`` (see :func:`~sriovdp.workers.grpcwire.methods.service_methods`)."""

    def __init__(
        self, methods: Iterable[Method], *, max_receive_bytes: int = DEFAULT_MAX_MESSAGE
    ) -> None:
        self.methods: dict[bytes, Method] = {}
        for m in methods:
            key = m.path.encode()
            if key in self.methods:
                raise ValueError(f"method {m.path} given twice")
            self.methods[key] = m
        if max_receive_bytes < 0:
            raise ValueError(f"max_receive_bytes must be >= 0, not {max_receive_bytes}")
        self.max_receive_bytes = max_receive_bytes
        self.h2_config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,  # headers stay bytes: no decoding on the hot path
            validate_inbound_headers=True,
            # our own response headers are constant and well-formed
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.connections: set[Connection] = set()
        self.path: str | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._stopped = False

    async def start(self, path: str | os.PathLike[str]) -> None:
        """Listens on the unix socket ``path``; OSError (naming the path) if it cannot."""
        if self._listener is not None or self._stopped:
            raise RuntimeError("a Server starts once")
        loop = asyncio.get_running_loop()
        where = os.fspath(path)
        try:
            self._listener = await loop.create_unix_server(
                lambda: Connection(self), path=where, backlog=BACKLOG
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot bind unix socket {where}: {exc.strerror or exc}"
            ) from exc
        self.path = where

    async def stop(self, grace: float | None = 0.0) -> None:
        """Stops serving: GOAWAY, ``grace`` seconds (None: no limit) for running handlers, then
        cancels the rest and closes every connection. Does not remove the socket file."""
        if self._stopped:
            return
        self._stopped = True
        if self._listener is not None:
            self._listener.close()
        connections = list(self.connections)
        for conn in connections:
            conn.goaway()
        running = [t for conn in connections for t in conn.tasks()]
        if running and (grace is None or grace > 0):
            await asyncio.wait(running, timeout=grace)
        for conn in connections:
            conn.cancel_streams("the server is stopping")
        running = [t for conn in connections for t in conn.tasks()]
        if running:
            _, late = await asyncio.wait(running, timeout=CANCEL_WAIT_S)
            if late:
                log.warning("%d gRPC handlers ignored their cancellation", len(late))
        for conn in connections:
            conn.close()
        if self._listener is not None:
            await self._listener.wait_closed()
