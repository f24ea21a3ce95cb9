"""Device types as plug-ins (plugin worker process): one module per driver family.

Importing this package registers the built-in families: ``vfio`` (vfio-pci), ``uio`` (igb_uio,
uio_pci_generic), ``netdev`` (kernel network drivers: no device nodes), ``rdma`` (``isRdma``),
``vhost`` (``needVhostNet``), ``vdpa`` (``vdpaType``), ``auxnet`` (``auxNetDevice`` pools) and
``cxi`` (Slingshot CXI functions). See ``base.DriverFamily`` for the interface.
"""

from __future__ import annotations

from sriovdp.workers.plugin.drivers import auxnet, cxi, netdev, rdma, uio, vdpa, vfio, vhost
from sriovdp.workers.plugin.drivers.base import DriverContext, DriverFamily, Spec
from sriovdp.workers.plugin.drivers.registry import (
    families,
    families_for,
    missing_nodes,
    register,
    report_missing_nodes,
)

__all__ = [
    "DriverContext",
    "DriverFamily",
    "Spec",
    "auxnet",
    "cxi",
    "families",
    "families_for",
    "missing_nodes",
    "netdev",
    "rdma",
    "register",
    "report_missing_nodes",
    "uio",
    "vdpa",
    "vfio",
    "vhost",
]
