"""The pool's device table and health (plugin worker process; changed by ``bus`` (link health)
and ``MainThread`` (rescans, stop), read by the handlers on ``grpc-loop``).

:class:`PoolState` owns the devices, the link states they depend on, and the answers built from
them. Readers take :attr:`PoolState.view`, an immutable snapshot swapped in whole on every change
(Allocate reads it without a lock). Every new view (a change, or :meth:`PoolState.close`) calls the
wakers (:meth:`PoolState.add_waker`): the gRPC server's event loop wakes its ListAndWatch streams
through one; threads can also block in :meth:`PoolState.wait_change`.

Health: a device with no health link is Healthy while it exists; otherwise it follows the
LinkState of its health link (a VF's PF netdev, or a function's own netdev), Healthy until the
first LinkState for that link arrives. A VF's own netdev never matters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sriovdp.proto import api_pb2
from sriovdp.shared.messages import LinkState
from sriovdp.shared.model import PoolConfig, PoolDevice
from sriovdp.workers.plugin.allocation import AllocationTable
from sriovdp.workers.plugin.preferred import PoolLayout

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"


@dataclass(frozen=True, slots=True)
class View:
    """One consistent snapshot of the pool."""

    version: int
    devices: Mapping[str, PoolDevice]
    healthy: Mapping[str, bool]
    allocation: AllocationTable
    #: GetPreferredAllocation's view of the devices: built with each device list, kept when
    #: only health changes (the kubelet offers only healthy ids)
    layout: PoolLayout
    listing: api_pb2.ListAndWatchResponse
    closed: bool

    @property
    def healthy_count(self) -> int:
        return sum(1 for ok in self.healthy.values() if ok)


@dataclass(frozen=True, slots=True)
class LinkChange:
    """What applying one LinkState did."""

    health_changed: bool
    #: the link appeared or vanished (relative to what discovery saw): time to rescan
    new_or_presence_changed: bool


def listing(
    pool: PoolConfig, devices: Iterable[PoolDevice], healthy: Mapping[str, bool]
) -> api_pb2.ListAndWatchResponse:
    out = []
    for device in devices:
        numa = device.function.numa_node
        dev = api_pb2.Device(ID=device.id, health=HEALTHY if healthy[device.id] else UNHEALTHY)
        if numa is not None and not pool.exclude_topology:
            dev.topology.nodes.append(api_pb2.NUMANode(ID=numa))
        out.append(dev)
    return api_pb2.ListAndWatchResponse(devices=out)


class PoolState:
    """Thread-safe owner of the pool's devices and health."""

    def __init__(
        self,
        pool: PoolConfig,
        devices: Iterable[PoolDevice],
        build_table: Callable[[Iterable[PoolDevice]], AllocationTable],
    ) -> None:
        self.pool = pool
        self._build_table = build_table
        self._cond = threading.Condition()
        self._links: dict[str, LinkState] = {}
        self._listeners: list[Callable[[View, str], None]] = []
        self._wakers: list[Callable[[], None]] = []
        devs = {d.id: d for d in devices}
        self._view = self._make_view(0, devs, build_table(devs.values()), closed=False)

    @property
    def view(self) -> View:
        return self._view

    def add_listener(self, callback: Callable[[View, str], None]) -> None:
        """``callback(view, reason)`` after every change, outside the lock."""
        self._listeners.append(callback)

    def add_waker(self, callback: Callable[[], None]) -> None:
        """``callback()`` right after every new view, closing included, in the changing thread
        and under the state's lock: it must be quick and must not block or call back into the
        state (``loop.call_soon_threadsafe`` is the intended use)."""
        with self._cond:
            self._wakers.append(callback)

    def links(self) -> set[str]:
        """The health links the current devices depend on."""
        return {d.health_link for d in self._view.devices.values() if d.health_link}

    def describe_health(self, device_id: str) -> str:
        """Why a device is Healthy or Unhealthy, for a log line: ``Unhealthy (health link
        ens1f0: operstate DOWN, no carrier)``."""
        view = self._view
        device = view.devices.get(device_id)
        word = HEALTHY if view.healthy.get(device_id, False) else UNHEALTHY
        if device is None or device.health_link is None:
            return word
        link = self._links.get(device.health_link)
        if link is None:
            return f"{word} (health link {device.health_link}: no state yet)"
        if not link.present:
            return f"{word} (health link {link.ifname}: gone)"
        carrier = "carrier" if link.carrier else "no carrier"
        return f"{word} (health link {link.ifname}: operstate {link.operstate}, {carrier})"

    def _healthy(self, device: PoolDevice) -> bool:
        if device.health_link is None:
            return True
        link = self._links.get(device.health_link)
        return link is None or link.healthy

    def _make_view(
        self,
        version: int,
        devices: dict[str, PoolDevice],
        table: AllocationTable,
        closed: bool,
    ) -> View:
        healthy = {i: self._healthy(d) for i, d in devices.items()}
        return View(
            version,
            devices,
            healthy,
            table,
            PoolLayout(devices),
            listing(self.pool, devices.values(), healthy),
            closed,
        )

    def _swap(self, view: View, reason: str) -> None:
        """Publishes a new view (caller holds the lock) and wakes every stream."""
        self._view = view
        self._cond.notify_all()
        for wake in self._wakers:
            wake()

    def _notify(self, view: View, reason: str) -> None:
        for callback in list(self._listeners):
            callback(view, reason)

    def apply_link(self, link: LinkState) -> LinkChange:
        with self._cond:
            old = self._links.get(link.ifname)
            self._links[link.ifname] = link
            # discovery saw the link in sysfs: before any message it counts as present
            presence = (old.present if old is not None else True) != link.present
            cur = self._view
            if cur.closed:
                return LinkChange(False, presence)
            healthy = {i: self._healthy(d) for i, d in cur.devices.items()}
            changed = healthy != cur.healthy
            if changed:
                view = View(
                    cur.version + 1,
                    cur.devices,
                    healthy,
                    cur.allocation,
                    cur.layout,
                    listing(self.pool, cur.devices.values(), healthy),
                    False,
                )
                self._swap(view, "link")
        if changed:
            state = "up" if link.healthy else "down"
            self._notify(view, f"link {link.ifname} {state}")
        return LinkChange(changed, presence)

    def set_pool(self, pool: PoolConfig) -> None:
        """A reloaded config changed the pool's own settings (allocation policy, device specs,
        topology, ...): the same devices get a new allocation table and list."""
        with self._cond:
            self.pool = pool
            cur = self._view
            if cur.closed:
                return
            view = self._make_view(
                cur.version + 1, dict(cur.devices), self._build_table(cur.devices.values()), False
            )
            self._swap(view, "config")
        self._notify(view, "config reloaded")

    def replace_devices(self, devices: Iterable[PoolDevice]) -> bool:
        """Sets a rescanned device list; returns whether it differs from the current one."""
        devs = {d.id: d for d in devices}
        with self._cond:
            cur = self._view
            if cur.closed or (
                list(devs) == list(cur.devices)
                and list(devs.values()) == list(cur.devices.values())
            ):
                return False
            view = self._make_view(cur.version + 1, devs, self._build_table(devs.values()), False)
            self._swap(view, "rescan")
        self._notify(view, f"rescan: {len(cur.devices)} -> {len(devs)} devices")
        return True

    def wait_change(self, version: int, gone: Callable[[], bool], timeout: float) -> View:
        """The first view newer than ``version``, or the current one when closed, gone or late."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._view.version != version or self._view.closed or gone(), timeout
            )
            return self._view

    def close(self) -> None:
        """Ends every ListAndWatch stream (graceful stop)."""
        with self._cond:
            cur = self._view
            self._swap(
                View(
                    cur.version + 1,
                    cur.devices,
                    cur.healthy,
                    cur.allocation,
                    cur.layout,
                    cur.listing,
                    True,
                ),
                "stop",
            )
