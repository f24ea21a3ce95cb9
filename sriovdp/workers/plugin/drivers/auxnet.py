"""Auxiliary network devices (``deviceType: auxNetDevice``, e.g. mlx5 SFs; plugin worker
process).

The container gets the SF's netdev through the CNI, not a device node (its RDMA nodes, with
``isRdma``, come from the ``rdma`` family). No device-info file: the NPWG device-info spec 1.1.0
has no type for an auxiliary device, and upstream writes none for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.drivers.base import DriverContext, DriverFamily
from sriovdp.workers.plugin.drivers.registry import register


@register
class AuxNet(DriverFamily):
    name = "auxnet"

    def applies(self, device: PoolDevice) -> bool:
        return device.aux is not None

    def devinfo_document(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        return {}
