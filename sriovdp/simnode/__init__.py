"""A simulated node: fake sysfs trees and matching configs (tests, ``make demo``, benchmarks).

Owns the ready-made nodes everybody builds on; the builder itself is
:class:`~sriovdp.simnode.sysfs.FakeSysfs`.

:func:`demo_node`: two Intel X710-like PFs, ``0000:03:00.0`` (netdev ``sim0pf0``) and
``0000:03:00.1`` (``sim0pf1``), NUMA nodes 0 and 1, 8 VFs each. On each PF, VFs 0-3 are bound to
``iavf`` (netdevs ``sim0pf0v0``...), VFs 4-5 to ``vfio-pci`` and VFs 6-7 to ``igb_uio``. VF
addresses follow :func:`~sriovdp.simnode.sysfs.vf_address`: ``0000:04:00.0``-``0000:04:00.7``
for the first PF, ``0000:05:00.0``-``0000:05:00.7`` for the second.

:func:`demo_config` fits it with three pools: ``sriov_net_A`` (legacy, netdevice, both PFs: the 8
iavf VFs, the others listed as excluded), ``sriov_vfio`` (selectors, ``vfio-pci``: 4 VFs) and
``sriov_uio`` (selectors, ``igb_uio``, ``allocationPolicy: balanced``: 4 VFs).

:func:`upstream_node` and :func:`upstream_readme_config` (module ``upstream``): a node with a
device of every kind the current upstream plugin handles (SFs, vDPA, InfiniBand pkeys, DDP, CXI,
accelerators) and the upstream README's example config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sriovdp.simnode.sysfs import FakeSysfs, VfDriver, vf_address
from sriovdp.simnode.upstream import upstream_node, upstream_readme_config

__all__ = [
    "DEMO_PFS",
    "FakeSysfs",
    "demo_config",
    "demo_node",
    "scale_node",
    "upstream_node",
    "upstream_readme_config",
    "vf_address",
]

#: (PF address, PF netdev, NUMA node) of :func:`demo_node`
DEMO_PFS = (("0000:03:00.0", "sim0pf0", 0), ("0000:03:00.1", "sim0pf1", 1))
_DEMO_VF_DRIVERS = ("iavf",) * 4 + ("vfio-pci",) * 2 + ("igb_uio",) * 2


def demo_node(root: Path) -> FakeSysfs:
    """Builds the demo node under ``root`` (see the module docstring)."""
    node = FakeSysfs(root)
    for address, netdev, numa in DEMO_PFS:
        node.add_pf(address, netdev=netdev, numa_node=numa, num_vfs=8, vf_driver=_DEMO_VF_DRIVERS)
    return node


def demo_config() -> dict[str, Any]:
    """The config document (``{"resourceList": [...]}``) that goes with :func:`demo_node`."""
    return {
        "resourceList": [
            {
                "resourceName": "sriov_net_A",
                "rootDevices": ["03:00.0", "03:00.1"],
                "sriovMode": True,
                "deviceType": "netdevice",
            },
            {
                "resourceName": "sriov_vfio",
                "deviceType": "netDevice",
                "selectors": {"vendors": ["8086"], "devices": ["154c"], "drivers": ["vfio-pci"]},
            },
            {
                "resourceName": "sriov_uio",
                "allocationPolicy": "balanced",
                "selectors": [{"drivers": ["igb_uio"], "pfNames": ["sim0pf0", "sim0pf1"]}],
            },
        ]
    }


def scale_node(root: Path, pfs: int, vfs_per_pf: int, vf_driver: VfDriver = "iavf") -> FakeSysfs:
    """A big node: ``pfs`` PFs (at most 128) with ``vfs_per_pf`` VFs (at most 256) each.

    PF ``p`` is at ``0000:01:ss.f`` with ``ss.f`` = ``p`` (slot ``p // 8``, function ``p % 8``),
    netdev ``scl<p>``, NUMA node ``p % 2``; its VFs are on bus ``0x02 + p``.
    """
    if not 0 < pfs <= 128:
        raise ValueError("pfs must be 1-128")
    node = FakeSysfs(root)
    for p in range(pfs):
        node.add_pf(
            f"0000:01:{p // 8:02x}.{p % 8}",
            netdev=f"scl{p}",
            numa_node=p % 2,
            num_vfs=vfs_per_pf,
            total_vfs=max(vfs_per_pf, 1),
            vf_driver=vf_driver,
        )
    return node
