"""The worker's end of the bus (plugin worker process, ``--run-dir`` given).

:class:`BusLink` owns a :class:`~sriovdp.shared.bus.BusClient` and one thread that reads it:
subscriptions are ``link.<ifname>.`` for every health link of the pool, ``kubelet.`` and
``device.``. LinkState messages are applied to the device table right here (health reaches
ListAndWatch streams without a hop through the main loop); a LinkState for a new link or one whose
presence flipped, and a DeviceEvent (a kernel uevent) that may concern the pool, ask the main loop
for a rescan (queued rescans are done once). Kubelet messages are handed to the main loop, which
owns the server and the registrar; a new kubelet checkpoint asks it to prune device-info files.
The thread blocks in ``poll`` with no timeout: idle costs nothing; a pipe wakes it when the set of
links changes or the worker stops. Publishing is safe from any thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

import zmq

from sriovdp.launch.wakeup import WakeupPipe
from sriovdp.shared.bus import BusClient
from sriovdp.shared.messages import (
    DeviceEvent,
    KubeletCheckpointState,
    KubeletSocketState,
    LinkState,
    Message,
    PluginSocketDeleted,
)
from sriovdp.workers.plugin.state import PoolState

log = logging.getLogger(__name__)

#: frames read per wake-up before re-checking the wake pipe
_BATCH = 256


def link_topic(ifname: str) -> str:
    return f"link.{ifname}."


class BusLink:
    """Subscriptions, LinkState -> health, kubelet events -> the main loop's action queue."""

    def __init__(
        self,
        run_dir: Path,
        src: str,
        state: PoolState,
        actions: queue.SimpleQueue[tuple[Any, ...]],
    ) -> None:
        self.state = state
        self._actions = actions
        self.client = BusClient(run_dir, src, subscribe=["kubelet.", "device."])
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        self._stopping = False
        self._wakeup = WakeupPipe(signals=False)
        self._thread = threading.Thread(target=self._run, name="bus", daemon=True)

    def start(self, links: set[str]) -> None:
        self.set_links(links)
        self._thread.start()

    def set_links(self, links: set[str]) -> None:
        """The links whose LinkState the pool needs (after start and every rescan)."""
        with self._lock:
            self._wanted = set(links)
        self._wakeup.wake()

    def publish(self, message: Message) -> None:
        self.client.publish(message)

    def _sync_subscriptions(self) -> None:
        with self._lock:
            wanted = set(self._wanted)
        sub = self.client.sub_socket
        for ifname in sorted(wanted - self._subscribed):
            sub.setsockopt(zmq.SUBSCRIBE, link_topic(ifname).encode("ascii"))
        for ifname in sorted(self._subscribed - wanted):
            sub.setsockopt(zmq.UNSUBSCRIBE, link_topic(ifname).encode("ascii"))
        self._subscribed = wanted

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.client.sub_socket, zmq.POLLIN)
        poller.register(self._wakeup.fileno(), zmq.POLLIN)
        try:
            while True:
                self._sync_subscriptions()
                events = dict(poller.poll(None))
                if self._wakeup.fileno() in events:
                    self._wakeup.drain()
                    if self._stopping:
                        return
                if self.client.sub_socket in events:
                    self._drain()
        except Exception:
            log.exception("bus thread failed; health and kubelet events stop here")
            self._actions.put(("bus-failed",))

    def _drain(self) -> None:
        for _ in range(_BATCH):
            if not self.client.sub_socket.poll(0):
                return
            env = self.client.receive_ready()
            if env is not None:
                self.handle(env.message)

    def handle(self, message: Message) -> None:
        if isinstance(message, LinkState):
            if message.ifname not in self._subscribed:
                return  # a late message of a link we no longer follow
            change = self.state.apply_link(message)
            if change.new_or_presence_changed:
                self._actions.put(("rescan", f"link {message.ifname} present={message.present}"))
        elif isinstance(message, DeviceEvent):
            if self._concerns_us(message):
                what = f"{message.action} {message.subsystem} {message.name}"
                self._actions.put(("rescan", f"uevent {what}"))
        elif isinstance(message, KubeletCheckpointState):
            self._actions.put(("checkpoint",))  # the main loop reads it and prunes device-info
        elif isinstance(message, (KubeletSocketState, PluginSocketDeleted)):
            self._actions.put(("kubelet", message))

    def _concerns_us(self, event: DeviceEvent) -> bool:
        """Every PCI or auxiliary device event may add or remove one of our devices (a new VF
        is nobody's yet); of network interfaces only ours matter (pods' veths come and go)."""
        if event.subsystem != "net":
            return True
        view = self.state.view
        ours = {d.function.netdev for d in view.devices.values()} | self.state.links()
        return event.name in ours

    def close(self) -> None:
        """Stops the thread and closes the bus client (lingers briefly for queued messages)."""
        self._stopping = True
        self._wakeup.wake()
        self._thread.join(1.0)
        if not self._thread.is_alive():
            self.client.close()
        self._wakeup.close()
