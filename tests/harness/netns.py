"""Network namespaces that a test creates for itself, driven with iproute2 (test harness only).

Tests never touch the machine's own interfaces: every link they toggle lives in a namespace made
here and deleted afterwards. Creating one needs root; callers skip with :data:`SKIP_REASON`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

CAN_CREATE = os.geteuid() == 0 and shutil.which("ip") is not None
SKIP_REASON = "needs root and iproute2 to create network namespaces and veth pairs"
_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetNS:
    """One network namespace, by name."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def create(cls, name: str) -> NetNS:
        """Adds the namespace and brings its loopback up."""
        subprocess.run(["ip", "netns", "add", name], check=True)
        ns = cls(name)
        ns.ip("link", "set", "lo", "up")
        return ns

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def ip(self, *args: str) -> str:
        out = subprocess.run(
            ["ip", "-n", self.name, *args], check=True, capture_output=True, text=True
        )
        return out.stdout

    def batch(self, commands: list[str]) -> None:
        """Runs many ``ip`` commands in one process (fast enough to flood netlink)."""
        subprocess.run(
            ["ip", "-n", self.name, "-batch", "-"],
            input="\n".join(commands) + "\n",
            check=True,
            capture_output=True,
            text=True,
        )

    def add_veth(self, name: str, peer: str, up: bool = True) -> None:
        self.ip("link", "add", name, "type", "veth", "peer", "name", peer)
        if up:
            self.ip("link", "set", name, "up")
            self.ip("link", "set", peer, "up")

    def kernel_links(self) -> dict[str, tuple[str, bool]]:
        """ifname -> (operstate, carrier) as the kernel reports them now."""
        links = json.loads(self.ip("-j", "link", "show"))
        return {
            link["ifname"]: (link["operstate"], "LOWER_UP" in link.get("flags", []))
            for link in links
        }

    def healthy(self) -> dict[str, bool]:
        """ifname -> the kernel's view: operstate UP and carrier (what makes a PF healthy)."""
        return {
            name: state == "UP" and carrier
            for name, (state, carrier) in self.kernel_links().items()
        }

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Runs the block with the calling thread inside the namespace, then moves it back.

        A socket made in the block stays in the namespace after it (how a test process opens a
        netlink socket that sees only this namespace's links).
        """
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Starts a process inside the namespace."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv], **kwargs
        )
        return proc
