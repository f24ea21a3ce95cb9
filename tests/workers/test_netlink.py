"""The health monitor's rtnetlink decoding (:mod:`sriovdp.workers.netlink`): hand-made datagrams,
malformed ones, and real dumps decoded side by side with pyroute2's ``ifinfmsg`` (the library the
decoding replaced; imported here, in the test process, never in the monitor)."""

from __future__ import annotations

import errno
import json
import random
import select
import struct
import subprocess
import sys

import pytest

from sriovdp.workers import netlink
from sriovdp.workers.netlink import DumpDone, DumpFailed, LinkFact, LinkSocket, parse
from tests.harness.netns import NetNS

OWN = 4242  # the port id of "our" socket in hand-made datagrams
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, payload: bytes, *, flags: int = 0, seq: int = 1, port: int = OWN) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, port) + payload


def link(
    kind: int = netlink.RTM_NEWLINK,
    *,
    name: bytes | None = b"pf0\0",
    index: int = 7,
    flags: int = IFF_UP | IFF_LOWER_UP,
    operstate: int | None = 6,
    carrier: int | None = 1,
    port: int = 0,
    extra: bytes = b"",
) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0)
    body += attr(13, struct.pack("=I", 1500))  # IFLA_MTU, ignored
    if name is not None:
        body += attr(netlink.IFLA_IFNAME, name)
    if operstate is not None:
        body += attr(netlink.IFLA_OPERSTATE, bytes([operstate]))
    if carrier is not None:
        body += attr(netlink.IFLA_CARRIER, bytes([carrier]))
    return message(kind, body + extra, port=port)


def done(seq: int = 1, flags: int = 0, port: int = OWN) -> bytes:
    return message(netlink.NLMSG_DONE, struct.pack("=i", 0), flags=flags, seq=seq, port=port)


def error(code: int) -> bytes:
    return message(netlink.NLMSG_ERROR, struct.pack("=i", -code) + b"\0" * 16)


# --- hand-made datagrams ---------------------------------------------------------------------


def test_a_link_and_the_end_of_our_dump() -> None:
    data = link() + link(name=b"pf1\0", index=8, operstate=2, carrier=0) + done(seq=5)
    assert parse(data, OWN) == [
        LinkFact("pf0", 7, "UP", True, True),
        LinkFact("pf1", 8, "DOWN", False, True),
        DumpDone(5, False),
    ]


def test_every_operstate_by_value_and_an_unknown_one() -> None:
    names = ["UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP"]
    for code, name in enumerate(names):
        assert parse(link(operstate=code), OWN)[0].operstate == name  # type: ignore[union-attr]
    assert parse(link(operstate=7), OWN)[0].operstate == "UNKNOWN"  # type: ignore[union-attr]
    assert parse(link(operstate=None), OWN)[0].operstate == "UNKNOWN"  # type: ignore[union-attr]


def test_carrier_from_the_flags_when_the_kernel_has_no_carrier_attribute() -> None:
    (up,) = parse(link(carrier=None, flags=IFF_UP | IFF_LOWER_UP), OWN)
    (down,) = parse(link(carrier=None, flags=IFF_UP), OWN)
    (attr_wins,) = parse(link(carrier=0, flags=IFF_UP | IFF_LOWER_UP), OWN)
    assert (up.carrier, down.carrier, attr_wins.carrier) == (True, False, False)  # type: ignore[union-attr]


def test_a_deleted_link_is_not_present() -> None:
    assert parse(link(netlink.RTM_DELLINK), OWN) == [
        LinkFact("pf0", 7, netlink.NOT_PRESENT, False, False)
    ]


def test_the_first_attribute_of_a_type_counts_and_flag_bits_are_ignored() -> None:
    nested_name = struct.pack("=HH", 8, netlink.IFLA_IFNAME | 0x8000) + b"pfX\0"
    data = link(name=None, extra=nested_name + attr(netlink.IFLA_IFNAME, b"later\0"))
    assert parse(data, OWN)[0].ifname == "pfX"  # type: ignore[union-attr]


def test_links_without_a_usable_name_are_skipped() -> None:
    for name in (None, b"\0", b"", b"\xff\xfe\0"):
        assert parse(link(name=name), OWN) == []


def test_answers_and_ends_of_other_sockets_dumps_are_skipped() -> None:
    assert parse(link(port=OWN + 1) + done(port=OWN + 1), OWN) == []
    assert parse(link(port=OWN), OWN) != []  # our own dump's answer
    assert parse(link(port=0), OWN) != []  # a kernel event


def test_an_interrupted_dump() -> None:
    assert parse(done(seq=9, flags=netlink.NLM_F_DUMP_INTR), OWN) == [DumpDone(9, True)]


def test_error_answers() -> None:
    with pytest.raises(DumpFailed) as refused:
        parse(link() + error(errno.EINVAL), OWN)
    assert refused.value.errno == errno.EINVAL
    with pytest.raises(OSError) as overflow:
        parse(error(errno.ENOBUFS), OWN)
    assert overflow.value.errno == errno.ENOBUFS and not isinstance(overflow.value, DumpFailed)
    assert parse(error(0) + link(), OWN) == [LinkFact("pf0", 7, "UP", True, True)]  # an ack


def test_truncated_and_malformed_datagrams_keep_what_came_before() -> None:
    whole = link() + link(name=b"pf1\0", index=8)
    first = [LinkFact("pf0", 7, "UP", True, True)]
    assert parse(whole[: len(whole) - 3], OWN) == first  # the second message is cut
    bad_length = struct.pack("=IHHII", 8, netlink.RTM_NEWLINK, 0, 1, 0)
    assert parse(link() + bad_length + link(name=b"pf1\0"), OWN) == first
    short_body = message(netlink.RTM_NEWLINK, b"\0" * 8)
    assert parse(short_body + link(), OWN) == first
    # an attribute longer than its message: the attributes before it still count
    broken_attr = link(carrier=None, extra=struct.pack("=HH", 200, netlink.IFLA_CARRIER))
    assert parse(broken_attr, OWN) == [LinkFact("pf0", 7, "UP", True, True)]
    assert parse(b"", OWN) == [] and parse(b"\0" * 15, OWN) == []


def test_random_bytes_never_crash_the_decoder() -> None:
    rng = random.Random(7)
    valid = link() + done()
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randint(0, len(data))]
        try:
            facts = parse(bytes(data), OWN)
        except OSError:
            continue  # an error answer: what the caller handles
        assert all(isinstance(f, LinkFact | DumpDone) for f in facts)


# --- real dumps, decoded by us and by pyroute2 ---------------------------------------------------

_BOTH = """
import json, select, socket, struct, sys
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from sriovdp.workers.netlink import DumpDone, LinkFact, parse

sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
sock.bind((0, 0))
port = sock.getsockname()[0]
sock.send(struct.pack("=IHHII", 32, 18, 0x301, 77, 0) + struct.pack("=BxHiII", 0, 0, 0, 0, 0))
ours, theirs, finished = [], [], False
while not finished:
    if not select.select([sock], [], [], 10)[0]:
        sys.exit("no answer to the dump")
    data = sock.recv(1 << 18)
    facts = parse(data, port)
    ours += [[f.ifname, f.ifindex, f.operstate, f.carrier] for f in facts if type(f) is LinkFact]
    finished = DumpDone(77, False) in facts
    for msg in MarshalRtnl().parse(data):
        if msg["header"]["type"] == 16:
            carrier = msg.get_attr("IFLA_CARRIER")
            if carrier is None:
                carrier = msg["flags"] & 0x10000
            name, state = msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_OPERSTATE")
            theirs.append([name, msg["index"], state, bool(carrier)])
print(json.dumps({"ours": ours, "theirs": theirs}))
"""


def _both_decodings(prefix: list[str]) -> dict[str, list[list[object]]]:
    out = subprocess.run(
        [*prefix, sys.executable, "-c", _BOTH], capture_output=True, text=True, check=True
    )
    result: dict[str, list[list[object]]] = json.loads(out.stdout)
    return result


def test_a_dump_of_this_machine_decodes_as_pyroute2_decodes_it() -> None:
    both = _both_decodings([])  # a read-only dump: nothing on the machine changes
    assert both["ours"] and both["ours"] == both["theirs"]


@pytest.mark.root
def test_links_in_every_state_decode_as_pyroute2_decodes_them(netns: NetNS) -> None:
    netns.add_veth("up0", "up0p")
    netns.add_veth("lower0", "lower0p")
    netns.ip("link", "set", "lower0p", "down")  # lower0: LOWERLAYERDOWN, no carrier
    netns.add_veth("down0", "down0p", up=False)
    both = _both_decodings(["ip", "netns", "exec", netns.name])
    states = {name: (state, carrier) for name, _index, state, carrier in both["ours"]}
    assert states["up0"] == ("UP", True)
    assert states["lower0"] == ("LOWERLAYERDOWN", False)
    assert states["down0"][0] == "DOWN"
    assert both["ours"] == both["theirs"]


_PROBE = """
import sys
import sriovdp.workers.health_monitor
print(sorted(m for m in sys.modules if m.partition(".")[0] == "pyroute2"))
"""


def test_the_monitor_does_not_import_pyroute2() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_socket_dumps_this_machine_without_changing_it() -> None:
    with LinkSocket(rcvbuf=1 << 20) as sock:
        seq = sock.request_dump()
        facts: list[LinkFact | DumpDone] = []
        while not any(isinstance(f, DumpDone) and f.seq == seq for f in facts):
            assert select.select([sock.fileno()], [], [], 10)[0], facts
            facts += sock.read()
    assert any(isinstance(f, LinkFact) and f.ifname == "lo" and f.present for f in facts)
