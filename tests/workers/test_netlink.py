"""The health monitor's link socket and message mapping (:mod:`sriovdp.workers.netlink`).

pyroute2 receives and decodes; these tests check what is ours: which messages count and the
:class:`LinkState` each one becomes. Real kernel messages from a namespace the test makes (links
up, down, without carrier, created, renamed, deleted, leaving a bridge, a receive-buffer overflow),
compared with iproute2's view of the same links; a few hand-made datagrams, decoded by pyroute2,
for what a namespace cannot produce on demand.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pyroute2 import IPRSocket
from pyroute2.netlink import NLM_F_DUMP_INTR, NLM_F_MULTI, NLM_F_REQUEST, NLMSG_DONE
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK, RTMGRP_LINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from sriovdp.shared.messages import LinkState
from sriovdp.workers.netlink import NOT_PRESENT, DumpDone, LinkSocket, facts
from tests.harness.netns import NetNS

pytestmark = pytest.mark.timeout(60)

Item = LinkState | DumpDone


def collect(
    sock: LinkSocket, until: Callable[[list[Item]], bool], timeout: float = 20
) -> list[Item]:
    """Reads until ``until(everything read so far)`` holds (fails the test after ``timeout``)."""
    items: list[Item] = []
    deadline = time.monotonic() + timeout
    while not until(items):
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"condition not met within {timeout} s; read: {items}")
        select.select([sock.fileno()], [], [], min(left, 1.0))
        items += sock.read()
    return items


def dump(sock: LinkSocket) -> dict[str, LinkState]:
    """Every link, by name, from one dump."""
    seq = sock.request_dump()
    items = collect(sock, lambda got: any(isinstance(i, DumpDone) and i.seq == seq for i in got))
    assert DumpDone(seq, False) in items
    return {i.ifname: i for i in items if isinstance(i, LinkState)}


def last_is(ifname: str, state: LinkState) -> Callable[[list[Item]], bool]:
    """Condition for :func:`collect`: the latest event about ``ifname`` is ``state``."""
    return lambda got: events_of(got, ifname)[-1:] == [state]


def views(states: dict[str, LinkState]) -> dict[str, tuple[str, bool]]:
    return {name: (s.operstate, s.carrier) for name, s in states.items()}


def events_of(items: Sequence[Item], ifname: str) -> list[LinkState]:
    return [i for i in items if isinstance(i, LinkState) and i.ifname == ifname]


# --- real kernel messages ----------------------------------------------------------------------


def test_a_dump_of_this_machine_matches_iproute2_and_changes_nothing() -> None:
    with LinkSocket(rcvbuf=1 << 20) as sock:
        links = dump(sock)
    kernel = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                       text=True, check=True).stdout)  # fmt: skip
    assert links["lo"].present and links["lo"].ifindex == 1
    for link in kernel:
        state = links[link["ifname"]]
        assert (state.ifindex, state.operstate) == (link["ifindex"], link["operstate"])
        if "UP" in link["flags"]:  # LOWER_UP is carrier only while the link is up
            assert state.carrier == ("LOWER_UP" in link["flags"]), link


@pytest.mark.root
def test_a_dump_reports_links_in_every_state(netns: NetNS) -> None:
    netns.add_veth("up0", "up0p")
    netns.add_veth("lower0", "lower0p")
    netns.ip("link", "set", "lower0p", "down")  # lower0: admin up, no carrier
    netns.add_veth("down0", "down0p", up=False)
    with netns.entered():
        sock = LinkSocket(rcvbuf=1 << 20)
        sock.open()
    try:
        links = dump(sock)
    finally:
        sock.close()
    assert views(links) == netns.kernel_links()
    assert links["up0"].operstate == "UP" and links["up0"].carrier
    assert links["lower0"].operstate == "LOWERLAYERDOWN" and not links["lower0"].carrier
    assert links["down0"].operstate == "DOWN" and not links["down0"].carrier
    assert links["lo"].operstate == "UNKNOWN" and links["lo"].healthy
    assert all(s.present for s in links.values())


@pytest.mark.root
def test_events_carrier_loss_creation_rename_and_deletion(netns: NetNS) -> None:
    netns.add_veth("pf0", "pf0p")
    with netns.entered():
        sock = LinkSocket(rcvbuf=1 << 20)
        sock.open()
    try:
        index = dump(sock)["pf0"].ifindex

        netns.ip("link", "set", "pf0p", "down")  # the peer takes pf0's carrier away
        collect(sock, last_is("pf0", LinkState("pf0", index, "LOWERLAYERDOWN", False, True)))

        netns.add_veth("new0", "new0p")
        got = collect(sock, lambda got: any(s.operstate == "UP" for s in events_of(got, "new0")))
        new_index = events_of(got, "new0")[0].ifindex
        peer_index = events_of(got, "new0p")[0].ifindex

        netns.ip("link", "set", "new0", "down")
        netns.ip("link", "set", "new0", "name", "renamed0")
        collect(sock, last_is("renamed0", LinkState("renamed0", new_index, "DOWN", False, True)))

        netns.ip("link", "del", "renamed0")  # takes its peer with it
        gone = LinkState("renamed0", new_index, NOT_PRESENT, False, False)
        peer_gone = LinkState("new0p", peer_index, NOT_PRESENT, False, False)
        collect(
            sock, lambda got: last_is("renamed0", gone)(got) and last_is("new0p", peer_gone)(got)
        )
        assert set(dump(sock)) == {"lo", "pf0", "pf0p"}
    finally:
        sock.close()


@pytest.mark.root
def test_a_port_leaving_its_bridge_is_not_a_deletion(netns: NetNS) -> None:
    netns.add_veth("port0", "port0p")
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("link", "set", "port0", "master", "br0")
    with netns.entered():
        sock = LinkSocket(rcvbuf=1 << 20)
        sock.open()
        raw = IPRSocket()  # pyroute2 itself, to see that the kernel did send the bridge DELLINK
        raw.bind(groups=RTMGRP_LINK)
    try:
        netns.ip("link", "set", "port0", "nomaster")
        bridge_dellink = False
        deadline = time.monotonic() + 20
        while not bridge_dellink and time.monotonic() < deadline:
            select.select([raw.socket.fileno()], [], [], 1.0)
            for msg in raw.get():
                if (
                    msg["header"]["type"] == RTM_DELLINK
                    and msg["family"] == socket.AF_BRIDGE
                    and msg.get_attr("IFLA_IFNAME") == "port0"
                ):
                    bridge_dellink = True
        assert bridge_dellink, "the kernel sent no AF_BRIDGE RTM_DELLINK: the test proves nothing"
        seq = sock.request_dump()  # answered after every event before it: all of them are read
        got = collect(sock, lambda got: any(isinstance(i, DumpDone) and i.seq == seq for i in got))
        assert events_of(got, "port0") and all(s.present for s in events_of(got, "port0"))
    finally:
        raw.close()
        sock.close()


@pytest.mark.root
def test_a_receive_buffer_overflow_is_enobufs_and_a_new_socket_dumps_the_truth(
    netns: NetNS,
) -> None:
    names = [f"pf{i}" for i in range(4)]
    for name in names:
        netns.add_veth(name, f"{name}p")
    with netns.entered():
        small = LinkSocket(rcvbuf=1)  # the kernel's minimum: a few link messages fill it
        small.open()
    try:
        assert small.rcvbuf < 8192
        toggles = [f"link set {names[i % 4]} {('down', 'up')[i // 4 % 2]}" for i in range(200)]
        netns.batch([*toggles, "link set pf2 down", "link set pf3p down"])  # nothing read meanwhile
        assert select.select([small.fileno()], [], [], 20)[0]
        with pytest.raises(OSError) as overflow:
            for _ in range(1000):  # a few messages may still be read before the error
                small.read()
        assert overflow.value.errno == errno.ENOBUFS
    finally:
        small.close()
    with netns.entered():
        fresh = LinkSocket(rcvbuf=1 << 20)
        fresh.open()
    try:
        links = dump(fresh)
    finally:
        fresh.close()
    kernel = netns.kernel_links()
    assert views(links) == kernel
    assert kernel["pf2"][0] == "DOWN" and kernel["pf3"] == ("LOWERLAYERDOWN", False)


def test_a_refused_request_is_an_oserror() -> None:
    """A real error answer of the kernel (no link has that index), read with pyroute2."""
    with IPRSocket() as raw:
        raw.bind(groups=0)
        msg = ifinfmsg()
        msg["index"] = 0x7FFFFFFF
        raw.put(msg, msg_type=RTM_GETLINK, msg_flags=NLM_F_REQUEST, msg_seq=5)
        assert select.select([raw.socket.fileno()], [], [], 10)[0]
        with pytest.raises(OSError) as refused:
            facts(raw.get())
    assert refused.value.errno == errno.ENODEV


def test_reopening_leaks_no_descriptor_and_starts_no_thread() -> None:
    fds = len(os.listdir("/proc/self/fd"))
    threads = threading.active_count()
    sock = LinkSocket(rcvbuf=1 << 16)
    for _ in range(30):
        sock.open()
        sock.request_dump()
    sock.close()
    with pytest.raises(OSError):
        sock.fileno()
    assert (len(os.listdir("/proc/self/fd")), threading.active_count()) == (fds, threads)


_PROBE = """
import gc, json, os, sys, threading
import sriovdp.workers.health_monitor
from pyroute2 import AsyncIPRSocket, IPRSocket
print(json.dumps({
    "iprsocket": "pyroute2.netlink.rtnl.iprsocket" in sys.modules,
    "objects": sum(isinstance(o, (IPRSocket, AsyncIPRSocket)) for o in gc.get_objects()),
    "threads": threading.active_count(),
    "sockets": sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
                   for fd in os.listdir("/proc/self/fd") if fd.isdigit()
                   and os.path.exists(f"/proc/self/fd/{fd}")),
}))
"""


def test_the_monitor_imports_pyroute2_but_makes_nothing_at_import() -> None:
    """Safe to fork after the import (a zygote): no pyroute2 socket, thread or descriptor yet."""
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"iprsocket": True, "objects": 0, "threads": 1, "sockets": 0}


# --- hand-made datagrams, decoded by pyroute2 ----------------------------------------------------

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, body: bytes, flags: int = 0, seq: int = 1) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def link(
    kind: int = RTM_NEWLINK,
    *,
    family: int = socket.AF_UNSPEC,
    name: bytes | None = b"pf0\0",
    flags: int = IFF_UP | IFF_LOWER_UP,
    operstate: int | None = 6,
    carrier: int | None = 1,
) -> bytes:
    body = struct.pack("=BxHiII", family, 1, 7, flags, 0)
    if name is not None:
        body += attr(3, name)  # IFLA_IFNAME
    if operstate is not None:
        body += attr(16, bytes([operstate]))  # IFLA_OPERSTATE
    if carrier is not None:
        body += attr(33, bytes([carrier]))  # IFLA_CARRIER
    return message(kind, body)


def decoded(data: bytes) -> list[Item]:
    messages: list[Any] = list(MarshalRtnl().parse(data))
    return facts(messages)


def test_hand_made_links_map_to_states() -> None:
    assert decoded(link()) == [LinkState("pf0", 7, "UP", True, True)]
    assert decoded(link(RTM_DELLINK)) == [LinkState("pf0", 7, NOT_PRESENT, False, False)]
    # old kernels send no IFLA_CARRIER: the IFF_LOWER_UP flag says the same
    assert decoded(link(carrier=None))[0] == LinkState("pf0", 7, "UP", True, True)
    assert decoded(link(carrier=None, flags=IFF_UP))[0] == LinkState("pf0", 7, "UP", False, True)
    # an operstate newer than pyroute2's table, or none at all
    assert decoded(link(operstate=9))[0] == LinkState("pf0", 7, "UNKNOWN", True, True)
    assert decoded(link(operstate=None))[0] == LinkState("pf0", 7, "UNKNOWN", True, True)


def test_messages_that_say_nothing_about_a_link_are_skipped() -> None:
    assert decoded(link(name=None)) == []
    assert decoded(link(name=b"\xff\xfe\0")) == []  # not UTF-8
    assert decoded(link(RTM_DELLINK, family=socket.AF_BRIDGE)) == []
    assert decoded(message(NLMSG_DONE, struct.pack("=i", 0), NLM_F_MULTI, seq=4)) == [
        DumpDone(4, False)
    ]
    assert decoded(message(NLMSG_DONE, struct.pack("=i", 0), NLM_F_DUMP_INTR, seq=4)) == [
        DumpDone(4, True)
    ]
