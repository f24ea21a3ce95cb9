"""Health monitor process: the rtnetlink link socket and the decoding of link messages.

Owns one ``AF_NETLINK``/``NETLINK_ROUTE`` socket bound to ``RTMGRP_LINK`` only: a plain,
non-blocking kernel socket, so the caller polls :meth:`LinkSocket.fileno`, reads everything
waiting with :meth:`LinkSocket.read`, and gets ``ENOBUFS`` (netlink overflow) as an ``OSError`` it
can count and recover from (pyroute2 0.9's ``IPRoute`` reads through an asyncio transport that
turns every receive error into a generic connection loss and queues data a ``poll()`` cannot see).

Messages are decoded here with :mod:`struct` (:func:`parse`): the netlink header, ``ifinfomsg``
and three link attributes, ``IFLA_IFNAME``, ``IFLA_OPERSTATE`` and ``IFLA_CARRIER``, read as
pyroute2's ``ifinfmsg`` reads them (tests compare the two on a real dump). Importing pyroute2's
marshal and ``ifinfmsg`` instead cost the health monitor about 3 MB of private memory; its
``__init__`` (every API of the library) about 13 MB more.

Sequence: :meth:`open` binds to the multicast group first, then :meth:`request_dump` asks for every
link. Dump answers and change events arrive interleaved on the same socket, in kernel order, so
applying everything in arrival order ends in the kernel's state.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

# <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTMGRP_LINK = 0x1
IFLA_IFNAME = 3
IFLA_OPERSTATE = 16
IFLA_CARRIER = 33
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
#: ``IF_OPER_*`` (RFC 2863 operational states), by value
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence number, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_NLATTR = struct.Struct("=HH")  # length, type
_ERRCODE = struct.Struct("=i")

#: large enough for a burst of thousands of link events; SO_RCVBUFFORCE needs CAP_NET_ADMIN
DEFAULT_RCVBUF = 4 * 1024 * 1024
_RECV_SIZE = 256 * 1024
_IFF_LOWER_UP = 0x10000
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: operstate published for a link that no longer exists
NOT_PRESENT = "NOTPRESENT"


@dataclass(frozen=True, slots=True)
class LinkFact:
    """One decoded link message: the link's full state as the kernel reported it."""

    ifname: str
    ifindex: int
    operstate: str
    carrier: bool
    present: bool


@dataclass(frozen=True, slots=True)
class DumpDone:
    """The end of the dump answer with this sequence number (``interrupted``: redo it)."""

    seq: int
    interrupted: bool


class DumpFailed(OSError):
    """The kernel answered the dump request with an error."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def _link_attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """The first payload of each attribute type in ``data[offset:end]`` (a malformed attribute
    ends the walk: what came before it stays)."""
    attrs: dict[int, bytes] = {}
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > end:
            break
        attrs.setdefault(kind & _NLA_TYPE_MASK, data[offset + _NLATTR.size : offset + length])
        offset += _align(length)
    return attrs


def decode_link(kind: int, data: bytes, offset: int, end: int) -> LinkFact | None:
    """A LinkFact from the payload of an RTM_NEWLINK/RTM_DELLINK message, None if unusable
    (too short, or without an interface name)."""
    if offset + _IFINFOMSG.size > end:
        return None
    _family, _type, ifindex, flags, _change = _IFINFOMSG.unpack_from(data, offset)
    attrs = _link_attrs(data, offset + _IFINFOMSG.size, end)
    raw_name = attrs.get(IFLA_IFNAME, b"").strip(b"\0")
    try:
        ifname = raw_name.decode()
    except UnicodeDecodeError:
        return None
    if not ifname:
        return None
    if kind == RTM_DELLINK:
        return LinkFact(ifname, ifindex, NOT_PRESENT, False, False)
    state = attrs.get(IFLA_OPERSTATE, b"")
    operstate = "UNKNOWN"  # missing, or a value newer than this table
    if state and state[0] < len(OPERSTATES):
        operstate = OPERSTATES[state[0]]
    carrier_attr = attrs.get(IFLA_CARRIER, b"")
    # old kernels have no IFLA_CARRIER: the IFF_LOWER_UP flag says the same
    carrier = bool(carrier_attr[0]) if carrier_attr else bool(flags & _IFF_LOWER_UP)
    return LinkFact(ifname, ifindex, operstate, carrier, True)


def parse(data: bytes, own_port: int) -> list[LinkFact | DumpDone]:
    """Decodes one datagram read from a link socket bound to port ``own_port``.

    Link messages become :class:`LinkFact`, the end of one of our dumps :class:`DumpDone`;
    anything else is skipped, and so is whatever follows a message whose length does not fit.
    Raises ``OSError(ENOBUFS)`` for an overflow reported as an error message and
    :class:`DumpFailed` for any other error the kernel answers a request with.
    """
    out: list[LinkFact | DumpDone] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, seq, port = _NLMSGHDR.unpack_from(data, offset)
        end = offset + length
        if length < _NLMSGHDR.size or end > len(data):
            break
        body = offset + _NLMSGHDR.size
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            if port in (0, own_port):  # else the answer to someone else's request
                fact = decode_link(kind, data, body, end)
                if fact is not None:
                    out.append(fact)
        elif kind == NLMSG_DONE and port == own_port:
            out.append(DumpDone(seq, bool(flags & NLM_F_DUMP_INTR)))
        elif kind == NLMSG_ERROR and body + _ERRCODE.size <= end:
            (code,) = _ERRCODE.unpack_from(data, body)
            code = abs(code)
            if code == errno.ENOBUFS:
                raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
            if code:  # 0 is an acknowledgement
                raise DumpFailed(code, f"link dump refused: {os.strerror(code)}")
        offset += _align(length)
    return out


class LinkSocket:
    """A non-blocking rtnetlink socket subscribed to link events only."""

    def __init__(self, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        self._rcvbuf = rcvbuf
        self._sock: socket.socket | None = None
        self._seq = 0
        self._pid = 0

    def open(self) -> None:
        """Creates the socket and joins RTMGRP_LINK (before any dump, so no change is missed)."""
        self.close()
        sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
            socket.NETLINK_ROUTE,
        )
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, self._rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            sock.bind((0, RTMGRP_LINK))
            self._pid = int(sock.getsockname()[0])
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def fileno(self) -> int:
        if self._sock is None:
            raise OSError(errno.EBADF, "link socket is closed")
        return self._sock.fileno()

    @property
    def rcvbuf(self) -> int:
        """The receive buffer the kernel granted (twice what was asked, for its bookkeeping)."""
        if self._sock is None:
            return 0
        return int(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def request_dump(self) -> int:
        """Asks for every link; returns the sequence number the answer will carry."""
        if self._sock is None:
            raise OSError(errno.EBADF, "link socket is closed")
        self._seq = self._seq % 0x7FFFFFFF + 1
        ifinfomsg = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        header = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(ifinfomsg), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0
        )
        self._sock.send(header + ifinfomsg)
        return self._seq

    def read(self, max_datagrams: int = 64) -> list[LinkFact | DumpDone]:
        """Decodes what is waiting (at most ``max_datagrams``) without blocking.

        Raises ``OSError`` on socket errors: ``ENOBUFS`` means the kernel dropped messages
        (overflow); :class:`DumpFailed` if the kernel refused the dump request.
        """
        if self._sock is None:
            raise OSError(errno.EBADF, "link socket is closed")
        out: list[LinkFact | DumpDone] = []
        for _ in range(max_datagrams):
            try:
                data = self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                break
            if not data:
                raise OSError(errno.ECONNRESET, "netlink socket returned no data")
            out += parse(data, self._pid)
        return out

    def __enter__(self) -> LinkSocket:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
