"""The bus broker with its last-value cache (supervisor process).

Producers PUSH into :attr:`Broker.pull` (``bus-in.sock``); the broker validates every message and
forwards it on :attr:`Broker.xpub` (``bus-out.sock``), where consumers SUB. Messages of retained
kinds (``Message.RETAINED``) are kept per topic, and replayed when a subscription that matches them
arrives, so a worker started at any time learns the current link and kubelet state at once (the
zguide's "last value cache"). Replays reach every matching subscriber; consumers drop what is not
newer than what they already applied (``seq``).

The broker owns no thread and no loop: the supervisor's single loop polls both sockets and calls
:meth:`Broker.handle_pull` / :meth:`Broker.handle_xpub`. Anything malformed is dropped and counted,
never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from sriovdp.shared.bus import RunDir
from sriovdp.shared.messages import (
    MAX_FRAME_BYTES,
    Envelope,
    Message,
    MessageError,
    SequenceCounter,
    decode,
    encode,
)

log = logging.getLogger(__name__)

#: how many frames one handle_* call drains at most before returning to the loop
_BATCH = 256
# plain ints: pyzmq's constants are enum.IntFlag, whose ``|`` and ``&`` run Python code in enum.py
# on every message (measurable on an idle supervisor whose caches are cold at each wake-up)


@dataclass(slots=True)
class BrokerStats:
    forwarded: int = 0
    dropped: int = 0
    replayed: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + 1


class Broker:
    """PULL -> validate -> XPUB, with a last-value cache of retained topics."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        run_dir: Path,
        on_message: Callable[[Envelope], None] | None = None,
        src: str = "supervisor",
        on_subscribe: Callable[[bytes], None] | None = None,
    ) -> None:
        rd = RunDir(run_dir)
        self.stats = BrokerStats()
        self._on_message = on_message
        #: told each new subscription's topic prefix, before its retained topics are replayed
        self._on_subscribe = on_subscribe
        self._src = src
        self._seq = SequenceCounter()
        self._cache: dict[bytes, bytes] = {}
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES * 2)
        self.pull.setsockopt(zmq.RCVHWM, 100_000)
        self.pull.bind(RunDir.endpoint(rd.bus_in))
        self.xpub = ctx.socket(zmq.XPUB)
        self.xpub.setsockopt(zmq.LINGER, 0)
        self.xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.xpub.setsockopt(zmq.SNDHWM, 100_000)
        self.xpub.setsockopt(zmq.MAXMSGSIZE, 4096)
        self.xpub.bind(RunDir.endpoint(rd.bus_out))

    def retained(self) -> dict[str, bytes]:
        """A copy of the last-value cache (topic -> packed envelope), for status and tests."""
        return {t.decode("ascii"): p for t, p in self._cache.items()}

    def publish(self, message: Message) -> None:
        """Publishes a message of the supervisor's own (e.g. a worker state change)."""
        topic, payload = encode(message, self._src, self._seq.next())
        self._forward(topic, payload, message.RETAINED)

    def _forward(self, topic: bytes, payload: bytes, retained: bool) -> None:
        if retained:
            self._cache[topic] = payload
        if self._send(topic, payload):
            self.stats.forwarded += 1

    def _send(self, topic: bytes, payload: bytes) -> bool:
        """Both frames to every matching subscriber; False (counted) when refused.

        An XPUB without ``XPUB_NODROP`` never blocks and never refuses: a subscriber whose queue
        is full misses the whole message. ``zmq.Again`` is handled all the same.
        """
        try:
            self.xpub.send(topic, zmq.SNDMORE | zmq.NOBLOCK)
            self.xpub.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.stats.drop("subscriber queue full")
            return False
        return True

    def handle_pull(self) -> None:
        """Drains waiting producer messages: validate, cache, forward, hand to the supervisor.

        Called when the loop's poll saw the socket readable; it stops when ``ZMQ_EVENTS`` says
        nothing more waits (no failed receive, whose ``zmq.Again`` costs more than the check).
        """
        pull = self.pull
        for _ in range(_BATCH):
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._accept(frames)
            events = pull.getsockopt(zmq.EVENTS)
            if not (isinstance(events, int) and events & zmq.POLLIN):
                return

    def _accept(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.stats.drop("wrong frame count")
            log.warning("bus: dropped a message of %d frames", len(frames))
            return
        try:
            env = decode(frames[0], frames[1])
        except MessageError as exc:
            self.stats.drop("malformed")
            log.warning("bus: dropped malformed message: %s", exc)
            return
        self._forward(frames[0], frames[1], env.message.RETAINED)
        if self._on_message is not None:
            self._on_message(env)

    def handle_xpub(self) -> None:
        """Drains subscription frames; a new subscription gets the matching retained topics."""
        for _ in range(_BATCH):
            try:
                frame = self.xpub.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if not frame or frame[0] not in (0, 1):
                self.stats.drop("bad subscription frame")
                continue
            if frame[0] == 1:
                if self._on_subscribe is not None:
                    self._on_subscribe(frame[1:])
                self._replay(frame[1:])

    def _replay(self, prefix: bytes) -> None:
        for topic, payload in list(self._cache.items()):
            if topic.startswith(prefix) and self._send(topic, payload):
                self.stats.replayed += 1

    def close(self) -> None:
        self.pull.close()
        self.xpub.close()
