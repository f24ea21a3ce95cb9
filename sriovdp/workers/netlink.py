"""Health monitor process: its rtnetlink link socket (pyroute2) and the mapping of link messages to
our :class:`~sriovdp.shared.messages.LinkState`.

pyroute2 reads and decodes; what is ours is which messages count and how they become states.

Socket: :class:`pyroute2.IPRSocket` (``pyroute2.netlink.rtnl.iprsocket``), pyroute2's synchronous
rtnetlink socket, used through its public API only: ``bind(groups=RTMGRP_LINK)`` joins the link
multicast group, ``put()`` sends the dump request, ``get()`` receives one datagram and decodes it
with pyroute2's ``MarshalRtnl`` into ``ifinfmsg`` messages. Its ``socket`` property is a plain
kernel socket: we set it non-blocking (``get()`` then raises ``BlockingIOError`` once drained),
poll its ``fileno()``, and size its receive buffer with ``setsockopt``. A receive-buffer overflow is
the kernel's ``ENOBUFS`` from ``recv()``, which ``get()`` raises unchanged as ``OSError``.

Not :class:`pyroute2.IPRoute`: in pyroute2 0.9 it reads through an asyncio datagram transport.
Measured with a 2 KB receive buffer and 200 link toggles in a namespace: its ``get()`` does raise
``OSError(ENOBUFS)``, but the transport has already drained the kernel socket into a Python queue
that ``poll()`` cannot see (the descriptor is not readable while messages wait), ``get()`` blocks
until a message arrives (no non-blocking read for a loop that also polls the bus and the signal
pipe), and after the error every later call raises it again (the object is spent).

Sequence: :meth:`LinkSocket.open` binds to the multicast group first, then
:meth:`LinkSocket.request_dump` asks for every link. Dump answers and change events arrive
interleaved on the same socket in kernel order, so applying everything in arrival order ends in the
kernel's state. No pyroute2 object exists before :meth:`LinkSocket.open` (the process may be forked
from a zygote after imports).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRSocket
from pyroute2.netlink import NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK, RTMGRP_LINK
from pyroute2.netlink.rtnl.ifinfmsg import IFF_LOWER_UP, ifinfmsg

from sriovdp.shared.messages import LinkState

#: large enough for a burst of thousands of link events; above ``net.core.rmem_max`` it needs
#: CAP_NET_ADMIN (SO_RCVBUFFORCE)
DEFAULT_RCVBUF = 4 * 1024 * 1024
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; not exported by Python's socket module
#: operstate published for a link that no longer exists
NOT_PRESENT = "NOTPRESENT"


@dataclass(frozen=True, slots=True)
class DumpDone:
    """The end of the dump answer with this sequence number (``interrupted``: redo it)."""

    seq: int
    interrupted: bool


def link_state(msg: Any) -> LinkState | None:
    """The state an ``RTM_NEWLINK``/``RTM_DELLINK`` message (a pyroute2 ``ifinfmsg``) reports.

    None for messages that are not about a link's existence: other address families (the bridge
    family's ``RTM_DELLINK`` only means a port left its bridge), or no usable interface name.
    """
    if msg["family"] != socket.AF_UNSPEC:
        return None
    ifname = msg.get_attr("IFLA_IFNAME")
    if not isinstance(ifname, str) or not ifname:  # pyroute2 leaves a non-UTF-8 name as bytes
        return None
    if msg["header"]["type"] == RTM_DELLINK:
        return LinkState(ifname, msg["index"], NOT_PRESENT, False, False)
    operstate = msg.get_attr("IFLA_OPERSTATE")
    if not isinstance(operstate, str):  # missing, or a value newer than pyroute2's table (bytes)
        operstate = "UNKNOWN"
    carrier = msg.get_attr("IFLA_CARRIER")
    if carrier is None:  # old kernels have no IFLA_CARRIER: the IFF_LOWER_UP flag says the same
        carrier = msg["flags"] & IFF_LOWER_UP
    return LinkState(ifname, msg["index"], operstate, bool(carrier), True)


def facts(messages: list[Any]) -> list[LinkState | DumpDone]:
    """Link states and dump ends from decoded messages; anything else is skipped.

    Raises ``OSError`` for an error the kernel reported in a message (``ENOBUFS``: overflow; any
    other code: a refused dump request).
    """
    out: list[LinkState | DumpDone] = []
    for msg in messages:
        header = msg["header"]
        error = header.get("error")
        if isinstance(error, OSError):
            raise error
        if isinstance(error, NetlinkError):
            raise OSError(error.code, f"link dump refused: {os.strerror(error.code)}")
        if error is not None:  # pyroute2 could not decode this message: skip it
            continue
        if header["type"] in (RTM_NEWLINK, RTM_DELLINK):
            state = link_state(msg)
            if state is not None:
                out.append(state)
        elif header["type"] == NLMSG_DONE:
            out.append(DumpDone(header["sequence_number"], bool(header["flags"] & NLM_F_DUMP_INTR)))
    return out


class LinkSocket:
    """A non-blocking pyroute2 rtnetlink socket subscribed to link events only."""

    def __init__(self, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        self._rcvbuf = rcvbuf
        self._sock: Any = None  # IPRSocket
        self._seq = 0

    def open(self) -> None:
        """Creates the socket and joins RTMGRP_LINK (before any dump, so no change is missed)."""
        self.close()
        sock = IPRSocket(rcvbuf=self._rcvbuf)
        try:
            raw = sock.socket
            raw.setblocking(False)
            # past net.core.rmem_max, which IPRSocket's own SO_RCVBUF was capped at
            with contextlib.suppress(PermissionError):
                raw.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self._rcvbuf)
            try:
                sock.bind(groups=RTMGRP_LINK)
            except KeyError as exc:  # pyroute2: no free netlink port id for this process
                raise OSError(errno.EADDRINUSE, f"netlink bind failed: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _open_socket(self) -> Any:
        if self._sock is None:
            raise OSError(errno.EBADF, "link socket is closed")
        return self._sock

    def fileno(self) -> int:
        fd: int = self._open_socket().socket.fileno()
        return fd

    @property
    def rcvbuf(self) -> int:
        """The receive buffer the kernel granted (twice what was asked, for its bookkeeping)."""
        if self._sock is None:
            return 0
        return int(self._sock.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def request_dump(self) -> int:
        """Asks for every link; returns the sequence number the answer will carry."""
        sock = self._open_socket()
        self._seq = self._seq % 0x7FFFFFFF + 1
        flags = NLM_F_REQUEST | NLM_F_DUMP
        sock.put(ifinfmsg(), msg_type=RTM_GETLINK, msg_flags=flags, msg_seq=self._seq)
        return self._seq

    def read(self, max_datagrams: int = 64) -> list[LinkState | DumpDone]:
        """Decodes what is waiting (at most ``max_datagrams``) without blocking.

        Raises ``OSError`` on socket errors: ``ENOBUFS`` means the kernel dropped messages
        (overflow); any other error too if the kernel refused the dump request.
        """
        sock = self._open_socket()
        out: list[LinkState | DumpDone] = []
        for _ in range(max_datagrams):
            try:
                messages = sock.get()
            except BlockingIOError:
                break
            out += facts(messages)
        return out

    def __enter__(self) -> LinkSocket:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
