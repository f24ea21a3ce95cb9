"""VF changes without a restart: when to rediscover the pool (plugin worker process,
``MainThread``).

:class:`Rescanner` keeps a cheap fingerprint of what discovery depends on and runs the full
``discover_pool`` only when it changed, or when asked directly (a LinkState for a new link or
one whose presence flipped). The main loop calls :meth:`Rescanner.check` every
``--rescan-interval`` seconds.

The fingerprint reads what ``discover_pool`` reads: for a pool whose selectors name their
candidates (:func:`~sriovdp.shared.pools.pool_scope`), the PFs they resolve to (``class/net``
for names, their ``virtfnN`` links, ``sriov_numvfs`` and netdevs) and the bound driver of each
candidate; for any other pool, the PCI function directory and every function's bound driver, and
the ``sriov_numvfs`` and netdevs of the PFs of its devices, and for an ``auxNetDevice`` pool the
auxiliary devices and their drivers. The pool comes with the Rescanner or,
if not given, from its first discovery: the first :meth:`~Rescanner.check` then rediscovers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from sriovdp.shared import pools, sysfs
from sriovdp.shared.model import PoolConfig, PoolDevice, PoolDiscovery

log = logging.getLogger(__name__)

Fingerprint = tuple[object, ...]


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


def _driver(path: str) -> str:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return ""


def fingerprint(
    sysfs_root: Path, devices: list[PoolDevice], pool: PoolConfig | None = None
) -> Fingerprint:
    """What discovery depends on, read cheaply (one readlink per candidate function)."""
    base = os.path.join(sysfs_root, "bus", "pci", "devices")
    if pool is not None:
        reader = sysfs.Reader(sysfs_root)
        scope = pools.pool_scope(pool, reader)
        if scope is not None:
            pf_facts = [(f.address, f.sriov_numvfs, f.netdevs) for f in reader.functions(scope.pfs)]
            drivers = tuple(_driver(os.path.join(base, a, "driver")) for a in scope.addresses)
            return ("scope", scope.addresses, drivers, tuple(pf_facts))
    funcs = _listdir(base)
    drivers = tuple(_driver(os.path.join(base, addr, "driver")) for addr in funcs)
    if pool is None or pool.is_aux:  # SFs come and go without a PCI function doing so
        aux = os.path.join(sysfs_root, "bus", "auxiliary", "devices")
        names = _listdir(aux)
        funcs += names
        drivers += tuple(_driver(os.path.join(aux, name, "driver")) for name in names)
    pfs = sorted({d.function.pf_address or d.id for d in devices})
    pf_facts_all: list[str] = []
    for pf in pfs:
        pf_facts_all.append(pf)
        pf_facts_all.append(_read(os.path.join(base, pf, "sriov_numvfs")))
        pf_facts_all.extend(_listdir(os.path.join(base, pf, "net")))
    return ("bus", funcs, drivers, tuple(pf_facts_all))


class Rescanner:
    """Rediscovers the pool when sysfs says something changed."""

    def __init__(
        self,
        sysfs_root: Path,
        discover: Callable[[], PoolDiscovery],
        apply: Callable[[PoolDiscovery], bool],
        current: Callable[[], list[PoolDevice]],
        pool: PoolConfig | None = None,
    ) -> None:
        self.sysfs_root = sysfs_root
        self._discover = discover
        self._apply = apply
        self._current = current
        self._pool = pool
        self._last = None if pool is None else fingerprint(sysfs_root, current(), pool)
        self.rescans = 0

    def check(self) -> bool:
        """Cheap periodic check; rescans when the fingerprint moved. Returns whether it changed."""
        if self._last is None:  # the pool is not known yet: learn it from a discovery
            return self.rescan("first check")
        now = fingerprint(self.sysfs_root, self._current(), self._pool)
        if now == self._last:
            return False
        return self.rescan("sysfs changed")

    def rescan(self, reason: str) -> bool:
        """Full discovery; applies the result. Returns whether the device list changed."""
        # the fingerprint is taken before discovery: what changes while discovery reads (the
        # kernel creates VFs one at a time) then moves it at the next check, where one taken
        # after discovery would hold the change without the device list having it
        pool = self._pool
        before = None if pool is None else fingerprint(self.sysfs_root, self._current(), pool)
        try:
            found = self._discover()
        except Exception:
            log.exception("rescan (%s) failed; keeping the current device list", reason)
            return False
        self.rescans += 1
        changed = self._apply(found)
        self._pool = found.pool
        if before is None or found.pool != pool:
            before = fingerprint(self.sysfs_root, list(found.devices), self._pool)
        self._last = before
        if changed:
            log.info("rescan (%s): %d devices now", reason, len(found.devices))
        else:
            log.debug("rescan (%s): no change", reason)
        return changed
