"""VF changes without a restart: when to rediscover the pool (plugin worker process).

:class:`Rescanner` keeps a cheap fingerprint of what discovery depends on (the PCI function
directory, each function's bound driver, the PFs' ``sriov_numvfs`` and netdev names) and runs the
full ``discover_pool`` only when it changed, or when asked directly (a LinkState for a new link or
one whose presence flipped). The main loop calls :meth:`Rescanner.check` every
``--rescan-interval`` seconds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from sriovdp.shared.model import PoolDevice, PoolDiscovery

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, ...], ...]


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _listdir(path: str) -> tuple[str, ...]:
    try:
        return tuple(sorted(os.listdir(path)))
    except OSError:
        return ()


def fingerprint(sysfs_root: Path, devices: list[PoolDevice]) -> Fingerprint:
    """What discovery depends on, read cheaply (one readlink per PCI function)."""
    base = os.path.join(sysfs_root, "bus", "pci", "devices")
    funcs = _listdir(base)
    drivers = []
    for addr in funcs:
        try:
            drivers.append(os.path.basename(os.readlink(os.path.join(base, addr, "driver"))))
        except OSError:
            drivers.append("")
    pfs = sorted({d.function.pf_address or d.id for d in devices})
    pf_facts = []
    for pf in pfs:
        pf_facts.append(pf)
        pf_facts.append(_read(os.path.join(base, pf, "sriov_numvfs")))
        pf_facts.extend(_listdir(os.path.join(base, pf, "net")))
    return (funcs, tuple(drivers), tuple(pf_facts))


class Rescanner:
    """Rediscovers the pool when sysfs says something changed."""

    def __init__(
        self,
        sysfs_root: Path,
        discover: Callable[[], PoolDiscovery],
        apply: Callable[[PoolDiscovery], bool],
        current: Callable[[], list[PoolDevice]],
    ) -> None:
        self.sysfs_root = sysfs_root
        self._discover = discover
        self._apply = apply
        self._current = current
        self._last = fingerprint(sysfs_root, current())
        self.rescans = 0

    def check(self) -> bool:
        """Cheap periodic check; rescans when the fingerprint moved. Returns whether it changed."""
        now = fingerprint(self.sysfs_root, self._current())
        if now == self._last:
            return False
        return self.rescan("sysfs changed")

    def rescan(self, reason: str) -> bool:
        """Full discovery; applies the result. Returns whether the device list changed."""
        try:
            found = self._discover()
        except Exception:
            log.exception("rescan (%s) failed; keeping the current device list", reason)
            return False
        self.rescans += 1
        changed = self._apply(found)
        self._last = fingerprint(self.sysfs_root, list(found.devices))
        if changed:
            log.info("rescan (%s): %d devices now", reason, len(found.devices))
        else:
            log.debug("rescan (%s): no change", reason)
        return changed
