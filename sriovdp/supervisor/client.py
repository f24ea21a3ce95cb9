"""The control client: a DEALER with a timeout, matching replies by request id (CLI process).

Used by ``sriov-supervisor status|reload|restart`` and by tests. A supervisor that does not answer
within the timeout (not running, hung, or a socket file left behind) is :class:`Unreachable`.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from sriovdp.shared.bus import RunDir
from sriovdp.supervisor.control import PROTOCOL_VERSION


class Unreachable(Exception):
    """No answer from the supervisor in time."""


class CommandFailed(Exception):
    """The supervisor answered ``ok: false``; the text is its error."""


class ControlClient:
    """One connection to one supervisor's control socket."""

    def __init__(self, run_dir: Path, timeout: float = 2.0) -> None:
        self.run_dir = RunDir(Path(run_dir))
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            self._ctx = zmq.Context(io_threads=1)
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, 16 << 20)
            sock.connect(RunDir.endpoint(self.run_dir.control))
            self._sock = sock
        return self._sock

    def request(self, cmd: str, **args: Any) -> Any:
        """Sends one command and returns its result; raises Unreachable or CommandFailed."""
        if not self.run_dir.control.exists():
            raise Unreachable(f"no supervisor socket at {self.run_dir.control}")
        sock = self._socket()
        rid = f"{os.getpid()}-{next(self._ids)}"
        payload = {"v": PROTOCOL_VERSION, "id": rid, "cmd": cmd, "args": args}
        sock.send_multipart([b"", msgpack.packb(payload, use_bin_type=True)])
        deadline = time.monotonic() + self.timeout
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not sock.poll(left_ms):
                raise Unreachable(f"supervisor at {self.run_dir.path} did not answer in time")
            frames = sock.recv_multipart()
            try:
                reply = msgpack.unpackb(frames[-1], raw=False)
            except Exception:
                continue
            if not isinstance(reply, dict) or reply.get("id") != rid:
                continue  # a late answer to an earlier request
            if reply.get("ok"):
                return reply.get("result")
            raise CommandFailed(str(reply.get("error", "failed")))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
