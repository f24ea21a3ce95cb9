"""Worker processes on the bus: health from LinkState, readiness, re-registration on kubelet
events, rescans on link presence (broker in a test thread, kubelet stand-in, real workers)."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from sriovdp.shared.messages import (
    DeviceEvent,
    KubeletSocketState,
    LinkState,
    PluginSocketDeleted,
    PoolStats,
    PoolSummary,
    WorkerHeartbeat,
    WorkerReady,
)
from sriovdp.simnode.kubelet import KubeletStandIn
from tests.harness.broker import BrokerThread
from tests.workers.plugin.conftest import Node
from tests.workers.plugin.test_worker import CHILD, NET, VFIO, listed, until

pytestmark = pytest.mark.timeout(60)


def link(name: str, up: bool, present: bool = True) -> LinkState:
    return LinkState(name, 9, "UP" if up else "DOWN", up, present)


def publish_cached(broker: BrokerThread, message: Any) -> None:
    """Publishes and waits until the broker has it (so late subscribers get it replayed)."""
    broker.publish(message)
    assert broker.wait_for(lambda e: e.message == message, 30)


def health(kubelet: KubeletStandIn, resource: str, prefix: str) -> set[str]:
    return {d.health for d in kubelet.devices(resource) if d.id.startswith(prefix)}


def on_bus(spawn: Any, node: Node, resource: str, *args: str) -> Any:
    return spawn(CHILD[resource], "--run-dir", str(node.run_dir), *args)


def test_health_follows_pf_links(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    publish_cached(broker, link("sim0pf1", up=False))  # before the worker exists
    worker = on_bus(spawn, demo, NET)
    assert kubelet.wait_for(lambda k: listed(k, NET, 8), 30), worker.log()
    first = kubelet.history(NET)[0]  # right from the first list, thanks to the cache
    assert {d.health for d in first if d.id.startswith("0000:05")} == {"Unhealthy"}
    assert {d.health for d in first if d.id.startswith("0000:04")} == {"Healthy"}
    broker.publish(link("sim0pf0", up=False))
    assert kubelet.wait_for(lambda k: health(k, NET, "0000:04") == {"Unhealthy"}, 30)
    assert kubelet.allocatable()[NET] == 0
    # a link that went down after the kubelet chose the device: allocated, warned about, counted
    assert kubelet.allocate(NET, ["0000:04:00.1"]).envs
    warned = "0000:04:00.1 is Unhealthy (health link sim0pf0: operstate DOWN, no carrier)"
    assert until(lambda: warned in worker.log()), worker.log()
    event = broker.wait_for(
        lambda e: (
            isinstance(e.message, PoolSummary)
            and "allocated unhealthy 0000:04:00.1" in e.message.last_event
        ),
        30,
    )
    assert event is not None, worker.log()
    stats = broker.wait_for(
        lambda e: isinstance(e.message, PoolStats) and e.message.unhealthy_requests == 1, 30
    )
    assert stats is not None and isinstance(stats.message, PoolStats)
    assert stats.message.allocate_outcomes == ("ok",)
    broker.publish(link("sim0pf0", up=True))
    broker.publish(link("sim0pf1", up=True))
    assert kubelet.wait_for(lambda k: k.allocatable()[NET] == 8, 30)
    assert kubelet.allocate(NET, ["0000:04:00.1"]).envs


def test_ready_summary_and_heartbeat(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    worker = on_bus(spawn, demo, VFIO, "--heartbeat-interval", "0.2")
    child = CHILD[VFIO]
    ready = broker.wait_for(lambda e: isinstance(e.message, WorkerReady), 30)
    assert ready is not None and ready.message == WorkerReady(child, worker.proc.pid)
    summary = broker.wait_for(
        lambda e: isinstance(e.message, PoolSummary) and e.message.registered, 10
    )
    assert summary is not None and isinstance(summary.message, PoolSummary)
    assert (summary.message.devices_total, summary.message.devices_healthy) == (4, 4)
    assert broker.wait_for(lambda e: e.message == WorkerHeartbeat(child, worker.proc.pid), 30)
    assert worker.terminate() == 0
    assert broker.wait_for(
        lambda e: isinstance(e.message, PoolSummary) and e.message.last_event == "stopped", 10
    )


def test_ready_without_kubelet(demo: Node, broker: BrokerThread, spawn: Any) -> None:
    on_bus(spawn, demo, VFIO)
    assert broker.wait_for(lambda e: isinstance(e.message, WorkerReady), 30)
    summary = broker.wait_for(lambda e: isinstance(e.message, PoolSummary), 30)
    assert summary is not None and isinstance(summary.message, PoolSummary)
    assert not summary.message.registered


def test_reregisters_on_kubelet_generation(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    # a long heartbeat: the socket safety net cannot be what heals it here
    worker = on_bus(spawn, demo, VFIO, "--heartbeat-interval", "60")
    assert kubelet.wait_for(lambda k: listed(k, VFIO, 4), 30)
    broker.publish(KubeletSocketState(True, os.stat(kubelet.socket).st_ino, 1))
    for generation in range(2, 5):
        before = kubelet.endpoint(VFIO)
        kubelet.restart()
        broker.publish(KubeletSocketState(True, os.stat(kubelet.socket).st_ino, generation))

        def moved(k: KubeletStandIn, old: str | None = before) -> bool:
            return listed(k, VFIO, 4) and k.endpoint(VFIO) != old

        assert kubelet.wait_for(moved, 30), worker.log()
    assert worker.proc.poll() is None
    assert demo.sockets() == sorted(["kubelet.sock", kubelet.endpoint(VFIO) or ""])


def test_new_generation_reregisters_even_with_a_reused_inode(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    # file systems hand a freed inode number to the next file: a new kubelet.sock with the old
    # number and our own socket untouched must still lead to a new registration
    inode = os.stat(kubelet.socket).st_ino
    worker = on_bus(spawn, demo, VFIO, "--heartbeat-interval", "60")
    assert kubelet.wait_for(lambda k: listed(k, VFIO, 4), 30)
    before = len(kubelet.registrations)
    # the worker's subscription may reach the broker after some of these (the last-value cache
    # then hands it only the newest): the first generation it sees is its baseline, and the
    # next one must re-register it although the inode and our socket are unchanged
    for generation in range(1, 11):
        broker.publish(KubeletSocketState(True, inode, generation))
        if kubelet.wait_for(lambda k: len(k.registrations) > before, 3):
            break
    assert len(kubelet.registrations) > before, worker.log()
    assert kubelet.registrations[-1].endpoint == kubelet.endpoint(VFIO)


def test_a_restarted_watchers_new_count_for_the_same_kubelet_sock_changes_nothing(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    """A kubelet watcher that missed its predecessor's retained state starts counting at 1: with
    the same kubelet.sock (inode and ctime) that is no new kubelet. A really new file after it
    re-registers exactly once."""
    st = os.stat(kubelet.socket)
    worker = on_bus(spawn, demo, VFIO, "--heartbeat-interval", "60")
    assert kubelet.wait_for(lambda k: listed(k, VFIO, 4), 30)
    assert broker.wait_subscribed(b"kubelet."), worker.log()
    broker.publish(KubeletSocketState(True, st.st_ino, 7, st.st_ctime_ns))
    assert broker.wait_for(lambda e: getattr(e.message, "generation", 0) == 7, 30)
    before = len(kubelet.registrations)
    broker.publish(KubeletSocketState(True, st.st_ino, 1, st.st_ctime_ns))  # same file
    broker.publish(KubeletSocketState(True, st.st_ino, 2, st.st_ctime_ns + 1))  # a new one
    assert kubelet.wait_for(lambda k: len(k.registrations) > before, 30), worker.log()
    time.sleep(0.5)  # a second registration, if the same-file message had caused one
    assert len(kubelet.registrations) == before + 1, worker.log()


def test_late_news_of_the_kubelet_sock_it_registered_on_is_no_new_registration(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    """After a kubelet restart the worker may register on the new kubelet.sock by itself (its
    socket was deleted: it serves a fresh one and retries Register) before the watcher's news
    of that restart arrive. Those news must not register it again: the kubelet would drop its
    connection to the pool, and every call in flight on it."""
    old = os.stat(kubelet.socket)
    worker = on_bus(spawn, demo, VFIO, "--heartbeat-interval", "60")
    assert kubelet.wait_for(lambda k: listed(k, VFIO, 4), 30)
    assert broker.wait_subscribed(b"kubelet."), worker.log()
    publish_cached(broker, KubeletSocketState(True, old.st_ino, 1, old.st_ctime_ns))
    own = kubelet.endpoint(VFIO) or ""
    kubelet.restart()  # every socket deleted, a new kubelet.sock
    new = os.stat(kubelet.socket)
    broker.publish(PluginSocketDeleted(own, 0))  # the watcher's first news
    assert kubelet.wait_for(lambda k: listed(k, VFIO, 4) and k.endpoint(VFIO) != own, 30)
    before = len(kubelet.registrations)
    # the rest of the news, late: kubelet.sock gone, then the new one
    broker.publish(KubeletSocketState(False, 0, 1))
    publish_cached(broker, KubeletSocketState(True, new.st_ino, 2, new.st_ctime_ns))
    time.sleep(1.0)  # a registration they caused would be there by now
    assert len(kubelet.registrations) == before, worker.log()
    assert kubelet.connected(VFIO)
    # and a really new kubelet.sock after them still registers it
    kubelet.restart()
    newer = os.stat(kubelet.socket)
    broker.publish(KubeletSocketState(True, newer.st_ino, 3, newer.st_ctime_ns))
    assert kubelet.wait_for(lambda k: len(k.registrations) > before and listed(k, VFIO, 4), 30)


def test_reregisters_when_own_socket_deleted(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    worker = on_bus(spawn, demo, VFIO, "--heartbeat-interval", "60")
    assert kubelet.wait_for(lambda k: listed(k, VFIO, 4), 30)
    assert broker.wait_subscribed(b"kubelet."), worker.log()  # the deletions are not replayed
    own = kubelet.endpoint(VFIO) or ""
    broker.publish(PluginSocketDeleted("intel-com_other-0badc0de.sock", 1))  # not ours: ignored
    inode = os.stat(demo.plugin_dir / own).st_ino
    os.unlink(demo.plugin_dir / own)
    broker.publish(PluginSocketDeleted(own, inode))
    assert kubelet.wait_for(lambda k: listed(k, VFIO, 4) and k.endpoint(VFIO) != own, 30)
    assert len(kubelet.registrations) == 2 and worker.proc.poll() is None


def test_pf_link_gone_rescans_at_once(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    worker = on_bus(spawn, demo, NET, "--rescan-interval", "600")
    assert kubelet.wait_for(lambda k: listed(k, NET, 8), 30)
    demo.sysfs.set_num_vfs("0000:03:00.0", 0)
    broker.publish(link("sim0pf0", up=False, present=False))
    assert kubelet.wait_for(lambda k: len(k.devices(NET)) == 4, 30), worker.log()
    assert health(kubelet, NET, "0000:05") == {"Healthy"}


def test_a_device_event_rescans_at_once(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    """A kernel uevent on the bus (a VF rebound from vfio-pci to iavf) updates the pool's list
    right away, long before its periodic check; a net event about an interface that is not the
    pool's changes nothing."""
    worker = on_bus(spawn, demo, VFIO, "--rescan-interval", "600", "--log-level", "debug")
    assert kubelet.wait_for(lambda k: listed(k, VFIO, 4), 30), worker.log()
    assert broker.wait_subscribed(b"device."), worker.log()  # device events are not replayed
    broker.publish(DeviceEvent("net", "veth1234abcd", "add", ""))
    demo.sysfs.bind("0000:04:00.4", "iavf", netdev="sim0pf0v4")
    broker.publish(DeviceEvent("pci", "0000:04:00.4", "bind", "iavf"))
    assert kubelet.wait_for(lambda k: listed(k, VFIO, 3), 10), worker.log()
    # the list reaches the kubelet before the rescan's log line is written
    assert until(lambda: "uevent bind pci 0000:04:00.4" in worker.log()), worker.log()[-3000:]
    assert "veth1234abcd" not in worker.log()
