"""Device table and health rules (sriovdp.workers.plugin.state)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from sriovdp.shared.messages import LinkState
from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.allocation import AllocationTable
from sriovdp.workers.plugin.drivers import DriverContext
from sriovdp.workers.plugin.state import PoolState
from tests.workers.plugin.factories import plain, pool, vf


def make(*devices: PoolDevice, exclude_topology: bool = False) -> PoolState:
    p = pool(exclude_topology=exclude_topology)

    def build(devs: Iterable[PoolDevice]) -> AllocationTable:
        return AllocationTable(p, devs, DriverContext(Path("/nonexistent")))

    return PoolState(p, devices, build)


def link(
    name: str, up: bool = True, present: bool = True, operstate: str | None = None
) -> LinkState:
    return LinkState(name, 3, operstate or ("UP" if up else "DOWN"), up, present)


def health(state: PoolState) -> dict[str, str]:
    return {d.ID: d.health for d in state.view.listing.devices}


def test_vf_follows_its_pf_and_recovers() -> None:
    a, b, c = vf(0, 0), vf(0, 1), vf(1, 0)
    state = make(a, b, c)
    assert set(health(state).values()) == {"Healthy"}  # no LinkState yet
    assert state.apply_link(link("pf0", up=False)).health_changed
    assert health(state) == {a.id: "Unhealthy", b.id: "Unhealthy", c.id: "Healthy"}
    assert state.view.healthy_count == 1
    state.apply_link(link("pf0", up=True, operstate="LOWERLAYERDOWN"))
    assert health(state)[a.id] == "Unhealthy"  # carrier alone is not enough
    assert state.apply_link(link("pf0")).health_changed
    assert set(health(state).values()) == {"Healthy"}


def test_vf_own_netdev_down_is_irrelevant() -> None:
    a = vf(0, 0)  # its own netdev is pf0v0
    state = make(a)
    change = state.apply_link(link("pf0v0", up=False))
    assert not change.health_changed and health(state)[a.id] == "Healthy"


def test_non_vf_follows_own_netdev_and_no_link_stays_healthy() -> None:
    nic, dpdk = plain("0000:20:00.0", "eno1"), plain("0000:21:00.0", None, "vfio-pci")
    state = make(nic, dpdk)
    state.apply_link(link("eno1", present=False))
    assert health(state) == {nic.id: "Unhealthy", dpdk.id: "Healthy"}
    assert state.links() == {"eno1"}


def test_presence_flip_is_reported_and_rescan_removes_devices() -> None:
    a, b = vf(0, 0), vf(0, 1)
    state = make(a, b)
    assert not state.apply_link(link("pf0")).new_or_presence_changed
    assert state.apply_link(link("pf0", present=False)).new_or_presence_changed
    assert state.replace_devices([a])
    assert [d.ID for d in state.view.listing.devices] == [a.id]
    assert b.id not in state.view.allocation.prepared
    assert not state.replace_devices([a])


def test_topology_unless_excluded() -> None:
    a = vf(0, 0, numa=1)
    assert [n.ID for n in make(a).view.listing.devices[0].topology.nodes] == [1]
    assert not make(a, exclude_topology=True).view.listing.devices[0].HasField("topology")


def test_streams_wake_on_change_and_close() -> None:
    state = make(vf(0, 0))
    start = state.view.version
    got: list[int] = []
    t = threading.Thread(
        target=lambda: got.append(state.wait_change(start, lambda: False, 30).version)
    )
    t.start()
    state.apply_link(link("pf0", up=False))
    t.join(10)
    assert got == [start + 1]
    state.close()
    assert state.wait_change(state.view.version, lambda: False, 30).closed
