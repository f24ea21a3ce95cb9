"""Kernel uevents in the health monitor (``sriovdp.workers.uevents``): recorded datagrams of real
PCI bind/unbind/add/remove events decoded through pyroute2, the reader's recovery, and a live
uevent from a veth in a namespace the test creates, published on the bus by the real process."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyroute2.netlink.uevent import MarshalUevent

from sriovdp.shared.backoff import BackoffPolicy
from sriovdp.shared.messages import DeviceEvent, WorkerReady
from sriovdp.workers.uevents import RESYNC, UeventReader, device_event
from tests.harness.broker import BrokerThread
from tests.harness.netns import NetNS
from tests.workers.conftest import Listener, Proc, worker_argv

pytestmark = pytest.mark.timeout(60)


def _datagram(header: str, **props: str) -> bytes:
    """A uevent as the kernel sends it: ``action@devpath``, then ``KEY=value`` strings, each
    NUL-terminated (lib/kobject_uevent.c)."""
    return b"\0".join([header.encode(), *(f"{k}={v}".encode() for k, v in props.items())]) + b"\0"


VF = "/devices/pci0000:00/0000:00:02.0/0000:03:00.0/0000:04:00.1"
PCI = {"SUBSYSTEM": "pci", "PCI_CLASS": "20000", "PCI_ID": "8086:154C"}
PCI |= {"PCI_SUBSYS_ID": "8086:0000", "PCI_SLOT_NAME": "0000:04:00.1"}
PCI |= {"MODALIAS": "pci:v00008086d0000154Csv00008086sd00000000bc02sc00i00"}
#: what a VF's life looks like on the uevent socket: created by sriov_numvfs (add), bound by
#: iavf (bind, with DRIVER), unbound, bound to vfio-pci, removed
RECORDED = [
    (
        _datagram(f"add@{VF}", ACTION="add", DEVPATH=VF, **PCI, SEQNUM="4411"),
        DeviceEvent("pci", "0000:04:00.1", "add", ""),
    ),
    (
        _datagram(f"bind@{VF}", ACTION="bind", DEVPATH=VF, **PCI, DRIVER="iavf", SEQNUM="4412"),
        DeviceEvent("pci", "0000:04:00.1", "bind", "iavf"),
    ),
    (
        _datagram(f"unbind@{VF}", ACTION="unbind", DEVPATH=VF, **PCI, SEQNUM="4420"),
        DeviceEvent("pci", "0000:04:00.1", "unbind", ""),
    ),
    (
        _datagram(f"bind@{VF}", ACTION="bind", DEVPATH=VF, **PCI, DRIVER="vfio-pci", SEQNUM="4421"),
        DeviceEvent("pci", "0000:04:00.1", "bind", "vfio-pci"),
    ),
    (
        _datagram(f"remove@{VF}", ACTION="remove", DEVPATH=VF, **PCI, SEQNUM="4430"),
        DeviceEvent("pci", "0000:04:00.1", "remove", ""),
    ),
    (  # captured from a veth in a test namespace (echo change > .../uevent)
        b"change@/devices/virtual/net/ue0\x00ACTION=change\x00DEVPATH=/devices/virtual/net/ue0"
        b"\x00SUBSYSTEM=net\x00SYNTH_UUID=0\x00INTERFACE=ue0\x00IFINDEX=3\x00SEQNUM=9881\x00",
        DeviceEvent("net", "ue0", "change", ""),
    ),
    (
        _datagram(
            "add@/devices/pci0000:00/0000:00:02.0/0000:03:00.0/mlx5_core.sf.4",
            ACTION="add",
            DEVPATH="/devices/pci0000:00/0000:00:02.0/0000:03:00.0/mlx5_core.sf.4",
            SUBSYSTEM="auxiliary",
            SEQNUM="5000",
        ),
        DeviceEvent("auxiliary", "mlx5_core.sf.4", "add", ""),
    ),
]

IGNORED = [
    _datagram("add@/devices/virtual/block/loop7", ACTION="add", SUBSYSTEM="block", SEQNUM="1"),
    _datagram(f"online@{VF}", ACTION="online", DEVPATH=VF, **PCI, SEQNUM="2"),
    _datagram("change@/devices/virtual/net/x", ACTION="change", SUBSYSTEM="net", SEQNUM="3"),
    b"libudev\x00garbage-that-is-not-a-header",
    b"",
]


def _parse(data: bytes) -> list[Any]:
    return list(MarshalUevent().parse(data))


@pytest.mark.parametrize(("data", "expected"), RECORDED, ids=lambda v: getattr(v, "action", ""))
def test_recorded_uevents_decode_through_pyroute2(data: bytes, expected: DeviceEvent) -> None:
    (message,) = _parse(data)
    assert device_event(message) == expected


@pytest.mark.parametrize("data", IGNORED)
def test_other_uevents_are_ignored(data: bytes) -> None:
    # the net one names no interface and no path: nothing a pool could match
    assert all(device_event(m) is None for m in _parse(data))


class FlakySocket:
    """Fails its first get() (as an overflow would), then delivers one datagram and blocks."""

    opened = 0

    def __init__(self) -> None:
        FlakySocket.opened += 1
        self._first = FlakySocket.opened == 1
        self._gate = threading.Event()

    def bind(self) -> None:
        pass

    def get(self) -> list[Any]:
        if self._first:
            raise OSError(105, "No buffer space available")
        if not self._gate.is_set():
            self._gate.set()
            return _parse(RECORDED[1][0])
        time.sleep(3600)
        return []

    def close(self) -> None:
        pass


def _take_until(reader: UeventReader, count: int) -> list[DeviceEvent]:
    events: list[DeviceEvent] = []
    deadline = time.monotonic() + 10
    while len(events) < count and time.monotonic() < deadline:
        events += reader.take()
        time.sleep(0.01)
    return events


def test_a_socket_error_means_resync_and_a_new_socket() -> None:
    FlakySocket.opened = 0
    reader = UeventReader(FlakySocket, BackoffPolicy(base=0.01, cap=0.01))
    reader.start()
    assert _take_until(reader, 2) == [RESYNC, RECORDED[1][1]]
    assert reader.errors == 1 and FlakySocket.opened == 2


@pytest.fixture
def live(
    netns: NetNS, broker: BrokerThread, listen: Callable[..., Listener], procs: list[Proc]
) -> Iterator[tuple[NetNS, Listener]]:
    listener = listen("device.", "worker.hm.")
    log_path = broker.run_dir / "hm.log"
    with log_path.open("wb") as err:
        popen = netns.popen(worker_argv("health-monitor", "hm", broker.run_dir), stderr=err)
    proc = Proc(popen, log_path)
    procs.append(proc)
    assert listener.wait_until(
        lambda: any(isinstance(m, WorkerReady) for m in listener.of_kind(WorkerReady))
    ), proc.log()
    yield netns, listener
    assert proc.terminate() == 0


@pytest.mark.root
def test_a_live_uevent_reaches_the_bus(live: tuple[NetNS, Listener]) -> None:
    netns, listener = live
    netns.add_veth("ue0", "ue1")
    expected = DeviceEvent("net", "ue0", "change", "")

    def seen() -> bool:
        return expected in listener.of_kind(DeviceEvent)

    # the reader thread may still be opening its socket: repeat the uevent until one is seen
    deadline = time.monotonic() + 30
    while not seen() and time.monotonic() < deadline:
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netns.name,
                "sh",
                "-c",
                "echo change > /sys/class/net/ue0/uevent",
            ],
            check=True,
        )
        listener.wait_until(seen, 0.5)
    assert seen()
