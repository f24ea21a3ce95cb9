"""Health monitor process: kernel uevents about PCI functions, auxiliary devices and network
interfaces, turned into :class:`~sriovdp.shared.messages.DeviceEvent` for the bus.

A driver bind or unbind, a VF created or removed (``sriov_numvfs``), a netdev renamed: each is a
uevent on ``NETLINK_KOBJECT_UEVENT``. Pools rescan when one arrives, within milliseconds instead
of at their periodic check (which stays, as the backstop for a lost event).

Reading: pyroute2's :class:`~pyroute2.UeventSocket`, which decodes each datagram into a map of
the kernel's ``KEY=value`` properties. In pyroute2 0.9 it is a synchronous face over an asyncio
transport that belongs to the thread that created it, and its ``get()`` blocks, so
:class:`UeventReader` creates, binds and reads it in a daemon thread of its own and hands decoded
events to the monitor's loop (a queue and a :class:`~sriovdp.launch.wakeup.WakeupPipe`): the bus
socket is only ever used by the main thread. A socket error (an overflow among them) is logged,
answered with a ``resync`` event (every pool rescans: events may have been lost) and a new socket,
after :class:`~sriovdp.shared.backoff.BackoffPolicy` delays while it keeps failing.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pyroute2 import UeventSocket

from sriovdp.launch.wakeup import WakeupPipe
from sriovdp.shared.backoff import BackoffPolicy
from sriovdp.shared.messages import DeviceEvent

log = logging.getLogger(__name__)

SUBSYSTEMS = frozenset({"pci", "auxiliary", "net"})
ACTIONS = frozenset({"add", "remove", "bind", "unbind", "change", "move"})
#: published after a socket error: events may have been lost, every pool rescans
RESYNC = DeviceEvent("pci", "*", "resync", "")
REOPEN_BACKOFF = BackoffPolicy(base=0.25, cap=10.0)


def device_event(props: Mapping[str, Any]) -> DeviceEvent | None:
    """The event a uevent's properties describe, or None when it is of no concern to a pool
    (another subsystem, another action, or no name)."""
    subsystem = str(props.get("SUBSYSTEM", ""))
    action = str(props.get("ACTION", ""))
    if subsystem not in SUBSYSTEMS or action not in ACTIONS:
        return None
    devpath = str(props.get("DEVPATH", ""))
    key = {"pci": "PCI_SLOT_NAME", "net": "INTERFACE"}.get(subsystem)
    name = str(props.get(key, "")) if key else ""
    name = name or os.path.basename(devpath)
    if not name or not name.isascii() or not name.isprintable():
        return None
    return DeviceEvent(subsystem, name, action, str(props.get("DRIVER", "")))


class UeventReader:
    """Reads uevents in a daemon thread; :meth:`take` returns what arrived (main thread)."""

    def __init__(
        self,
        open_socket: Callable[[], Any] = UeventSocket,
        policy: BackoffPolicy = REOPEN_BACKOFF,
    ) -> None:
        self._open_socket = open_socket
        self._policy = policy
        self._events: queue.SimpleQueue[DeviceEvent] = queue.SimpleQueue()
        self._wakeup = WakeupPipe(signals=False)
        self._thread = threading.Thread(target=self._run, name="uevents", daemon=True)
        self.errors = 0
        self.received = 0

    def start(self) -> None:
        self._thread.start()

    def fileno(self) -> int:
        """Readable when events wait for :meth:`take`."""
        return self._wakeup.fileno()

    def take(self) -> list[DeviceEvent]:
        self._wakeup.drain()
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def _hand_over(self, event: DeviceEvent) -> None:
        self._events.put(event)
        self._wakeup.wake()

    def _run(self) -> None:
        failures = 0
        while True:
            sock = None
            try:
                sock = self._open_socket()
                sock.bind()
                while True:
                    for message in sock.get():
                        failures = 0
                        self.received += 1
                        event = device_event(message)
                        if event is not None:
                            self._hand_over(event)
            except Exception as exc:
                self.errors += 1
                failures += 1
                log.warning("uevent socket failed (%s); reopening, pools rescan", exc)
                self._hand_over(RESYNC)
            finally:
                if sock is not None:
                    try:
                        sock.close()
                    except Exception as exc:
                        log.debug("closing the uevent socket: %s", exc)
            time.sleep(self._policy.delay(failures - 1) if failures > 1 else 0.0)
