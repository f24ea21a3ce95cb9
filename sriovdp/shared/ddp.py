"""The DDP package a PF runs, read through devlink (CLI ``discover``, plugin workers of pools
with ``ddpProfiles``).

Owns the ``ddpProfiles`` question: which Dynamic Device Personalization package is loaded on a
PF. The current upstream plugin asks devlink (``devlink dev info pci/<address>``, version
``fw.app.name``, e.g. ``ICE OS Default Package``); so do we, through pyroute2's devlink socket,
imported only when a pool asks (the supervisor and the CLI do not load pyroute2 otherwise).

:class:`DdpReader` sits on a :class:`DevlinkInfo`, the one call that reaches the kernel;
:class:`Devlink` is the real one, tests give recorded answers. A PF devlink cannot answer for
(no devlink instance, a driver without ``info_get``, no ``fw.app.name``) raises
:class:`DdpUnavailable` with the reason, which ``discover`` shows for the devices left out.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["DDP_VERSION_NAME", "DdpReader", "DdpUnavailable", "Devlink", "DevlinkInfo"]

#: the devlink info version that names the DDP package (ice; i40e has no devlink info)
DDP_VERSION_NAME = "fw.app.name"


class DdpUnavailable(Exception):
    """Devlink cannot tell the PF's DDP package; ``str()`` says why."""


class DevlinkInfo(Protocol):
    """``devlink dev info``: the running versions of one devlink instance as (name, value)."""

    def running_versions(self, bus: str, device: str) -> list[tuple[str, str]]:
        """Raises OSError (with ``errno``) when the kernel refuses."""
        ...


class Devlink:
    """The kernel's devlink over generic netlink (pyroute2), opened at the first question."""

    def __init__(self) -> None:
        self._socket: Any = None

    def running_versions(self, bus: str, device: str) -> list[tuple[str, str]]:
        from pyroute2.netlink import NLM_F_REQUEST
        from pyroute2.netlink.devlink import DEVLINK_NAMES, devlinkcmd
        from pyroute2.netlink.exceptions import NetlinkError

        if self._socket is None:
            from pyroute2 import DL

            try:
                self._socket = DL()
            except NetlinkError as exc:  # no devlink generic netlink family in this kernel
                raise OSError(
                    exc.code, f"devlink is not available ({os.strerror(exc.code)})"
                ) from None
        try:
            msg = devlinkcmd()
            msg["cmd"] = DEVLINK_NAMES["DEVLINK_CMD_INFO_GET"]
            msg["version"] = 1
            msg["attrs"] = [("DEVLINK_ATTR_BUS_NAME", bus), ("DEVLINK_ATTR_DEV_NAME", device)]
            replies = self._socket.nlm_request(
                msg, msg_type=self._socket.prid, msg_flags=NLM_F_REQUEST
            )
        except NetlinkError as exc:
            raise OSError(exc.code, os.strerror(exc.code)) from None
        return running_versions(replies)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def running_versions(replies: Iterable[Any]) -> list[tuple[str, str]]:
    """(name, value) of every ``DEVLINK_ATTR_INFO_VERSION_RUNNING`` in decoded info replies."""
    versions: list[tuple[str, str]] = []
    for reply in replies:
        for nested in reply.get_attrs("DEVLINK_ATTR_INFO_VERSION_RUNNING"):
            name = nested.get_attr("DEVLINK_ATTR_INFO_VERSION_NAME")
            value = nested.get_attr("DEVLINK_ATTR_INFO_VERSION_VALUE")
            if name is not None and value is not None:
                versions.append((str(name), str(value)))
    return versions


def package_name(versions: Iterable[tuple[str, str]]) -> str | None:
    """The DDP package name among devlink's running versions; None when it is not there."""
    return next((value for name, value in versions if name == DDP_VERSION_NAME), None)


class DdpReader:
    """Answers "which DDP package does this PF run", once per PF per reader."""

    def __init__(self, devlink: DevlinkInfo | None = None) -> None:
        self._devlink = devlink
        self._answers: dict[str, str | DdpUnavailable] = {}

    def package(self, pf_address: str) -> str:
        """The PF's DDP package name; raises :class:`DdpUnavailable` with the reason."""
        if pf_address not in self._answers:
            self._answers[pf_address] = self._ask(pf_address)
        answer = self._answers[pf_address]
        if isinstance(answer, DdpUnavailable):
            raise answer
        return answer

    def _ask(self, pf_address: str) -> str | DdpUnavailable:
        if self._devlink is None:
            self._devlink = Devlink()
        try:
            versions = self._devlink.running_versions("pci", pf_address)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if exc.errno == errno.EOPNOTSUPP:
                why = "the driver does not report device info"
            elif exc.errno == errno.ENODEV and exc.strerror == os.strerror(errno.ENODEV):
                why = "no devlink instance for it"
            return DdpUnavailable(f"devlink cannot answer for PF {pf_address}: {why}")
        name = package_name(versions)
        if name is None:
            return DdpUnavailable(f"devlink reports no {DDP_VERSION_NAME} for PF {pf_address}")
        return name

    def close(self) -> None:
        if isinstance(self._devlink, Devlink):
            self._devlink.close()
