"""A simulated node with a device of every kind the current upstream plugin handles, and the
upstream README's example config (tests; no daemon).

:func:`upstream_node` builds, under one sysfs root (addresses and names are what the README's
selectors ask for, or realistic ones where it names none):

=================  ==============  =========  ===========================================
PF (netdev)        vendor:device   VFs        what for
=================  ==============  =========  ===========================================
``0000:18:00.0``   8086:1572       8 x 154c   X710: VFs 0-3 ``iavf``, 4-7 ``vfio-pci``
(``enp0s0f0``)                               (``intel_sriov_netdevice``, ``_dpdk``)
``0000:1a:00.0``   8086:10fb       4 x 10ed   82599: VFs 0-1 ``ixgbevf``, 2-3 ``vfio-pci``
(``enp2s2f1``)
``0000:1c:00.0``   8086:1592       4 x 1889   E810 (``ice``, DDP packages): ``iavf``
(``ens801f0``)
``0000:3b:00.0``   15b3:1017       4 x 1018   ConnectX-5 in InfiniBand mode, RDMA; VF
(``ibp59s0f0``)                              pkeys 0x8001, 0x8001, 0x7fff, 0xffff
``0000:5e:00.0``   15b3:101d       4 x 101e   ConnectX-6 Dx, vDPA: VFs 0-1 ``vhost_vdpa``,
(``enp94s0f0``)                              2 ``virtio_vdpa``, 3 none
``0000:03:00.0``   15b3:a2d6       none       BlueField-2 ``p0``: SFs sfnum 1, 2, 4, 7
(``p0``)                                     (bound, netdev + RDMA), 3 (unbound); an
                                             ``mlx5_core.eth`` device without netdev
``0000:03:00.1``   15b3:a2d6       none       BlueField-2 ``p1``: SF sfnum 2
``0000:d8:00.0``   14e4:1750       none       BCM57508, ``bnxt_en``
``0000:c1:00.0``   17db:0501       2 x 0502   Slingshot Cassini, ``cxi_ss1``, each with a
(``hsn0``)                                   ``cxi<N>``
``0000:b0:00.0``,  8086:0d90       -          FPGA accelerators (class 0x12), ``vfio-pci``
``0000:b0:00.1``
=================  ==============  =========  ===========================================

:func:`upstream_readme_config` is the README's config as upstream shows it, but for one
trailing comma (after the ``brcm_sriov_bnxt`` selectors) that makes it invalid JSON for any
parser, upstream's own included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sriovdp.simnode.sysfs import FakeSysfs

__all__ = ["UPSTREAM_SFS", "upstream_node", "upstream_readme_config"]

#: SFs of :func:`upstream_node`: (parent PF, sfnum, netdev or None for unbound)
UPSTREAM_SFS: tuple[tuple[str, int, str | None], ...] = (
    ("0000:03:00.0", 1, "en3f0pf0sf1"),
    ("0000:03:00.0", 2, "en3f0pf0sf2"),
    ("0000:03:00.0", 3, None),
    ("0000:03:00.0", 4, "en3f0pf0sf4"),
    ("0000:03:00.0", 7, "en3f0pf0sf7"),
    ("0000:03:00.1", 2, "en3f1pf1sf2"),
)


def upstream_node(root: Path) -> FakeSysfs:
    """Builds the node of the module docstring under ``root``."""
    node = FakeSysfs(root)
    node.add_pf("0000:18:00.0", netdev="enp0s0f0", device="1572", vf_device="154c", num_vfs=8,
                vf_driver=("iavf",) * 4 + ("vfio-pci",) * 4)  # fmt: skip
    node.add_pf("0000:1a:00.0", netdev="enp2s2f1", driver="ixgbe", device="10fb",
                vf_device="10ed", num_vfs=4, vf_driver=("ixgbevf",) * 2 + ("vfio-pci",) * 2,
                numa_node=1)  # fmt: skip
    node.add_pf("0000:1c:00.0", netdev="ens801f0", driver="ice", device="1592",
                vf_device="1889", num_vfs=4)  # fmt: skip
    ib_vfs = node.add_pf("0000:3b:00.0", netdev="ibp59s0f0", driver="mlx5_core", vendor="15b3",
                         device="1017", vf_device="1018", num_vfs=4, vf_driver="mlx5_core",
                         link_type="infiniband", rdma=True)  # fmt: skip
    for vf, pkey in zip(ib_vfs, (0x8001, 0x8001, 0x7FFF, 0xFFFF), strict=True):
        node.set_pkey(vf, pkey)
    dx_vfs = node.add_pf("0000:5e:00.0", netdev="enp94s0f0", driver="mlx5_core", vendor="15b3",
                         device="101d", vf_device="101e", num_vfs=4,
                         vf_driver="mlx5_core")  # fmt: skip
    node.add_vdpa(dx_vfs[0], "vhost_vdpa")
    node.add_vdpa(dx_vfs[1], "vhost_vdpa")
    node.add_vdpa(dx_vfs[2], "virtio_vdpa", netdev="eth_vdpa2")
    for address, netdev in (("0000:03:00.0", "p0"), ("0000:03:00.1", "p1")):
        node.add_pf(address, netdev=netdev, driver="mlx5_core", vendor="15b3", device="a2d6",
                    num_vfs=0, rdma=True)  # fmt: skip
    node.add_sf("0000:03:00.0", 0, netdev=None, driver="mlx5_core.eth", aux_type="eth")
    for parent, sfnum, sf_netdev in UPSTREAM_SFS:
        node.add_sf(parent, sfnum, netdev=sf_netdev,
                    rdma=f"mlx5_sf{sfnum}" if sf_netdev else None,
                    driver="mlx5_core.sf" if sf_netdev else None)  # fmt: skip
    node.add_pf("0000:d8:00.0", netdev="ens5f0np0", driver="bnxt_en", vendor="14e4",
                device="1750", num_vfs=0)  # fmt: skip
    cxi_vfs = node.add_pf("0000:c1:00.0", netdev="hsn0", driver="cxi_ss1", vendor="17db",
                          device="0501", vf_device="0502", num_vfs=2,
                          vf_driver="cxi_ss1")  # fmt: skip
    node.add_cxi("0000:c1:00.0")
    for vf in cxi_vfs:
        node.add_cxi(vf)
    for address in ("0000:b0:00.0", "0000:b0:00.1"):
        node.add_function(address, driver="vfio-pci", device="0d90", pci_class=0x120000)
    return node


def upstream_readme_config() -> dict[str, Any]:
    """The upstream README's example config (see the module docstring)."""
    intel_vfs = {"vendors": ["8086"], "devices": ["154c", "10ed", "1889"],
                 "drivers": ["i40evf", "ixgbevf", "iavf"]}  # fmt: skip
    return {
        "resourceList": [
            {"resourceName": "intel_sriov_netdevice", "selectors": [dict(intel_vfs)]},
            {
                "resourceName": "intel_sriov_dpdk",
                "resourcePrefix": "intel.com",
                "selectors": [
                    {
                        "vendors": ["8086"],
                        "devices": ["154c", "10ed", "1889"],
                        "drivers": ["vfio-pci"],
                        "pfNames": ["enp0s0f0", "enp2s2f1"],
                        "needVhostNet": True,
                    }
                ],
            },
            {
                "resourceName": "mlnx_sriov_rdma",
                "resourcePrefix": "mellanox.com",
                "selectors": [
                    {
                        "vendors": ["15b3"],
                        "devices": ["1018"],
                        "drivers": ["mlx5_ib"],
                        "isRdma": True,
                    }
                ],
            },
            {
                "resourceName": "infiniband_rdma_netdevs",
                "selectors": [{"linkTypes": ["infiniband"], "isRdma": True}],
            },
            {
                "resourceName": "ct6dx_vdpa_vhost",
                "selectors": [
                    {
                        "vendors": ["15b3"],
                        "devices": ["101e"],
                        "drivers": ["mlx5_core"],
                        "vdpaType": "vhost",
                    }
                ],
            },
            {
                "resourceName": "intel_fpga",
                "deviceType": "accelerator",
                "selectors": [{"vendors": ["8086"], "devices": ["0d90"]}],
            },
            {
                "resourceName": "bf2_sf",
                "resourcePrefix": "nvidia.com",
                "deviceType": "auxNetDevice",
                "selectors": [
                    {
                        "vendors": ["15b3"],
                        "devices": ["a2d6"],
                        "pfNames": ["p0#1-5"],
                        "auxTypes": ["sf"],
                    }
                ],
            },
            {
                "resourceName": "intel_sriov_netdevice_additional_env",
                "selectors": [dict(intel_vfs)],
                "additionalInfo": {"*": {"token": "3e49019f-412f-4f02-824e-4cd195944205"}},
            },
            {
                "resourceName": "brcm_sriov_bnxt",
                "resourcePrefix": "broadcom.com",
                "selectors": [{"vendors": ["14e4"], "devices": ["1750"], "drivers": ["bnxt_en"]}],
            },
            {"resourceName": "old_selectors_syntax_example", "selectors": dict(intel_vfs)},
        ]
    }
