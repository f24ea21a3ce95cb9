"""Health monitor process: the rtnetlink link socket and the decoding of link messages.

Owns one ``AF_NETLINK``/``NETLINK_ROUTE`` socket bound to ``RTMGRP_LINK`` only. Messages are
decoded with pyroute2's netlink marshal and ``ifinfmsg``, imported without the rest of the
library (:func:`_bare_pyroute2`). The socket itself is a plain, non-blocking kernel socket owned
here rather than pyroute2's ``IPRoute``, because pyroute2 0.9 reads
through an asyncio transport that turns every receive error (``ENOBUFS`` included) into a generic
connection loss and keeps data in a user-space queue a ``poll()`` cannot see. Here the caller polls
:meth:`LinkSocket.fileno`, reads everything waiting with :meth:`LinkSocket.read`, and gets
``ENOBUFS`` (netlink overflow) as an ``OSError`` it can count and recover from.

Sequence: :meth:`open` binds to the multicast group first, then :meth:`request_dump` asks for every
link. Dump answers and change events arrive interleaved on the same socket, in kernel order, so
applying everything in arrival order ends in the kernel's state.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import socket
import struct
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any


def _bare_pyroute2() -> ModuleType | None:
    """Puts pyroute2's package in ``sys.modules`` without running its ``__init__``.

    ``pyroute2/__init__.py`` imports every API of the library (IPRoute, NDB with sqlite3, asyncio,
    multiprocessing, nftables, ...): about 13 MB of private memory and 260 modules, where decoding
    link messages needs the netlink base and ``ifinfmsg`` (1.6 MB, 37 modules). Returns the bare
    package, or None when pyroute2 is already imported (or not installed: the import below fails
    as it would have).
    """
    if "pyroute2" in sys.modules:
        return None
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return None
    package = importlib.util.module_from_spec(spec)
    sys.modules["pyroute2"] = package
    return package


def _complete_on_first_use(package: ModuleType) -> None:
    """Any later use of a name the bare package lacks (``from pyroute2 import IPRoute``) runs the
    real ``__init__`` into it first: the same module object, every loaded submodule reused."""
    loader = package.__spec__.loader if package.__spec__ is not None else None

    def complete(name: str) -> Any:
        delattr(package, "__getattr__")
        if loader is not None:
            loader.exec_module(package)
        return getattr(package, name)

    setattr(package, "__getattr__", complete)  # noqa: B010 (a module-level __getattr__, PEP 562)


_package = _bare_pyroute2()
try:
    from pyroute2.netlink import (
        NLM_F_DUMP,
        NLM_F_DUMP_INTR,
        NLM_F_REQUEST,
        NLMSG_DONE,
        NLMSG_ERROR,
    )
    from pyroute2.netlink.marshal import Marshal
    from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK, RTMGRP_LINK
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
finally:
    if _package is not None:
        _complete_on_first_use(_package)
del _package


class MarshalLink(Marshal):  # type: ignore[misc]  # pyroute2 is untyped
    """pyroute2's rtnetlink marshal (``MarshalRtnl``) for link messages only: RTM_NEWLINK and
    RTM_DELLINK decode as ``ifinfmsg``; anything else (never sent to a socket bound to
    ``RTMGRP_LINK`` alone) as a bare ``nlmsg``, and NLMSG_DONE/NLMSG_ERROR as the base class does.
    """

    msg_map = {RTM_NEWLINK: ifinfmsg, RTM_DELLINK: ifinfmsg}


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


def decode_link(msg: Any) -> LinkFact | None:
    """A LinkFact from a pyroute2 ``ifinfmsg`` (RTM_NEWLINK/RTM_DELLINK), None if unusable."""
    ifname = msg.get_attr("IFLA_IFNAME")
    if not isinstance(ifname, str) or not ifname:
        return None
    ifindex = int(msg["index"])
    if msg["header"]["type"] == RTM_DELLINK:
        return LinkFact(ifname, ifindex, NOT_PRESENT, False, False)
    operstate = msg.get_attr("IFLA_OPERSTATE")
    if not isinstance(operstate, str):
        operstate = "UNKNOWN"
    carrier_attr = msg.get_attr("IFLA_CARRIER")
    if carrier_attr is None:  # old kernels: the IFF_LOWER_UP flag says the same
        carrier = bool(int(msg["flags"]) & _IFF_LOWER_UP)
    else:
        carrier = bool(carrier_attr)
    return LinkFact(ifname, ifindex, operstate, carrier, True)


class LinkSocket:
    """A non-blocking rtnetlink socket subscribed to link events only."""

    def __init__(self, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        self._rcvbuf = rcvbuf
        self._sock: socket.socket | None = None
        self._marshal = MarshalLink()
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
        ifinfomsg = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
        header = struct.pack(
            "=IHHII", 16 + len(ifinfomsg), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0
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
            self._decode(data, out)
        return out

    def _decode(self, data: bytes, out: list[LinkFact | DumpDone]) -> None:
        for msg in self._marshal.parse(data):
            header = msg["header"]
            kind = header["type"]
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                if header["pid"] not in (0, self._pid):
                    continue  # the answer to someone else's request (never for a bound socket)
                fact = decode_link(msg)
                if fact is not None:
                    out.append(fact)
            elif kind == NLMSG_DONE and header["pid"] == self._pid:
                interrupted = bool(header["flags"] & NLM_F_DUMP_INTR)
                out.append(DumpDone(int(header["sequence_number"]), interrupted))
            elif kind == NLMSG_ERROR and header.get("error") is not None:
                err = header["error"]
                code = getattr(err, "code", errno.EIO)
                if code == errno.ENOBUFS:
                    raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
                raise DumpFailed(code, f"link dump refused: {err}")

    def __enter__(self) -> LinkSocket:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
