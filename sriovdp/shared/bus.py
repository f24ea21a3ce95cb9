"""Bus endpoints and the client side of the bus (used in every child process and in tests).

The broker lives in the supervisor (``sriovdp.supervisor.broker``): producers PUSH into its PULL
socket, consumers SUB from its XPUB socket. Both are ``ipc://`` files in the run directory. A
:class:`BusClient` owns one ZeroMQ context per process, created after fork (never inherited).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zmq

from sriovdp.shared.messages import Envelope, Message, MessageError, SequenceCounter, decode, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunDir:
    """File layout of the run directory (default ``/run/sriov-dp``, mode 0700)."""

    path: Path

    @property
    def lock(self) -> Path:
        return self.path / "supervisor.lock"

    @property
    def bus_in(self) -> Path:
        """Broker's PULL socket: producers connect a PUSH here."""
        return self.path / "bus-in.sock"

    @property
    def bus_out(self) -> Path:
        """Broker's XPUB socket: consumers connect a SUB here."""
        return self.path / "bus-out.sock"

    @property
    def control(self) -> Path:
        """Supervisor's ROUTER socket for status, reload and restart."""
        return self.path / "control.sock"

    @staticmethod
    def endpoint(path: Path) -> str:
        return f"ipc://{path}"


class BusClient:
    """One process's connection to the bus: publish, subscribe, receive validated messages.

    Not thread-safe: use it from one thread (workers give it a thread of its own and hand
    messages over through their own state). ``dropped`` counts frames refused as malformed or stale.
    """

    def __init__(self, run_dir: Path, src: str, subscribe: Iterable[str] = ()) -> None:
        self.src = src
        self.dropped = 0
        self._seq = SequenceCounter()
        self._applied: dict[str, int] = {}
        self._ctx = zmq.Context(io_threads=1)
        rd = RunDir(run_dir)
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 500)
        self._push.setsockopt(zmq.SNDHWM, 10_000)
        self._push.connect(RunDir.endpoint(rd.bus_in))
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        for prefix in subscribe:
            self._sub.setsockopt(zmq.SUBSCRIBE, prefix.encode("ascii"))
        self._sub.connect(RunDir.endpoint(rd.bus_out))
        self._lock = threading.Lock()

    @property
    def sub_socket(self) -> zmq.Socket[bytes]:
        """The SUB socket, for callers that poll it together with other sockets."""
        return self._sub

    def subscribe(self, prefix: str) -> None:
        self._sub.setsockopt(zmq.SUBSCRIBE, prefix.encode("ascii"))

    def publish(self, message: Message) -> None:
        """Queues one message to the broker (never blocks for long: PUSH queues until connected).

        Safe to call from any thread of the process: the PUSH socket is guarded by a lock.
        """
        topic, payload = encode(message, self.src, self._seq.next())
        with self._lock:
            try:
                self._push.send_multipart([topic, payload], flags=zmq.NOBLOCK)
            except zmq.Again:
                log.warning("bus queue full, dropped %s", topic.decode())

    def receive(self, timeout_ms: int) -> Envelope | None:
        """Next valid, newer-than-applied message within timeout_ms, or None.

        Malformed frames and replays of what was already applied are dropped (and counted).
        """
        if not self._sub.poll(timeout_ms):
            return None
        return self.receive_ready()

    def receive_ready(self) -> Envelope | None:
        """Reads one waiting frame set without blocking; None when it was dropped or none waits."""
        try:
            frames = self._sub.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            return None
        if len(frames) != 2:
            self.dropped += 1
            log.warning("bus: dropped message of %d frames", len(frames))
            return None
        try:
            env = decode(frames[0], frames[1])
        except MessageError as exc:
            self.dropped += 1
            log.warning("bus: dropped malformed message: %s", exc)
            return None
        if env.seq <= self._applied.get(env.topic, -1):
            return None  # a replay from the last-value cache of something already applied
        self._applied[env.topic] = env.seq
        return env

    def close(self) -> None:
        self._push.close()
        self._sub.close()
        self._ctx.term()
