"""The supervisor's bus broker run in a thread of the test process (test harness only).

The real broker lives in the supervisor's single loop; tests of the bus, the plugin worker and the
health monitor / kubelet watcher drive the same :class:`Broker` from a thread instead, and use it to
publish messages and to wait for what producers sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import zmq

from sriovdp.shared.bus import BusClient
from sriovdp.shared.messages import Envelope, Message
from sriovdp.supervisor.broker import Broker


class BrokerThread:
    """A real broker on ``run_dir``'s ipc sockets, polled by a daemon thread."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.seen: list[Envelope] = []
        #: topic prefixes subscribed to, in order
        self.subscriptions: list[bytes] = []
        self._cond = threading.Condition()
        self.broker = Broker(
            self.ctx, run_dir, on_message=self._record, on_subscribe=self._subscribed
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _record(self, env: Envelope) -> None:
        with self._cond:
            self.seen.append(env)
            self._cond.notify_all()

    def _subscribed(self, prefix: bytes) -> None:
        with self._cond:
            self.subscriptions.append(prefix)
            self._cond.notify_all()

    def wait_subscribed(self, prefix: bytes, timeout: float = 30.0) -> bool:
        """Whether a subscriber of ``prefix`` is there (within ``timeout``): what is published
        from then on reaches it. A subscriber's SUB socket sends its subscriptions on its own
        time, so a message published right after a worker started could miss it."""
        with self._cond:
            return self._cond.wait_for(lambda: prefix in self.subscriptions, timeout)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.broker.pull, zmq.POLLIN)
        poller.register(self.broker.xpub, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(20):
                if sock is self.broker.pull:
                    self.broker.handle_pull()
                else:
                    self.broker.handle_xpub()

    def publish(self, message: Message) -> None:
        """Publishes through a producer client (the broker itself is not thread-safe)."""
        client = BusClient(self.run_dir, "test")
        client.publish(message)
        client.close()  # lingers until the message is handed to the broker

    def wait_for(
        self, predicate: Callable[[Envelope], bool], timeout: float = 10.0
    ) -> Envelope | None:
        """The first seen message for which ``predicate(env)`` holds, waiting up to ``timeout``."""
        with self._cond:
            found: list[Envelope] = []

            def check() -> bool:
                found[:] = [e for e in self.seen if predicate(e)]
                return bool(found)

            self._cond.wait_for(check, timeout)
            return found[0] if found else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.broker.close()
        self.ctx.term()
